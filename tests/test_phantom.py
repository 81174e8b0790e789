"Acceptance tests of the physics phantom and `med-k2n phantom` (SPEC §2.1)"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import hashlib, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import nibabel as nib
import pytest

from med_k2n.phantom import make_phantom, write_phantom_dataset, phantom_cmd, subject_seed, PHANTOM_MODALITIES
from med_k2n.io import find_cases

MODS = ('t1n', 't1c', 't2w', 't2f')

def _cli(*args):
    exe = shutil.which('med-k2n')
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from med_k2n.cli import main; sys.exit(main())']
    return subprocess.run(cmd + ['phantom', *map(str, args)], capture_output=True, text=True, timeout=300)

@pytest.fixture(scope='module')
def cli_dataset(tmp_path_factory):
    "The acceptance run: `med-k2n phantom --out D --subjects 20 --size 128` (its time is reported by bench/phantom.py, not tested)"
    out = tmp_path_factory.mktemp('ph') / 'data'
    r = _cli('--out', out, '--subjects', 20, '--size', 128)
    assert r.returncode == 0, r.stderr
    return out, r.stdout

def _load(out):
    subs = {}
    for d in sorted(Path(out).iterdir()):
        subs[d.name] = {f.name[len(d.name)+1:-len('.nii.gz')]: nib.load(f) for f in d.glob('*.nii.gz')}
    return subs

def test_cli_layout(cli_dataset):
    out, stdout = cli_dataset
    assert 'wrote 20 phantom subjects' in stdout and 'skull-stripped' in stdout
    subs = _load(out)
    assert list(subs) == [f'BraTS-PHA-{i:05d}-000' for i in range(20)]
    ref = None
    for sid, imgs in subs.items():
        assert sorted(imgs) == sorted(MODS + ('seg',)), (sid, sorted(imgs))
        for k, img in imgs.items():
            assert img.shape == (128, 128, 83)
            assert img.get_data_dtype() == (np.uint8 if k == 'seg' else np.float32)
            if ref is None: ref = img.affine
            np.testing.assert_array_equal(img.affine, ref)
    np.testing.assert_allclose(np.diag(ref)[:3], [1.875] * 3)
    assert nib.aff2axcodes(ref) == ('R', 'A', 'S')
    assert not list(Path(out).rglob('.tmp-*'))
    cases = find_cases(out)                       # the seg file is never taken for a modality
    assert len(cases) == 20 and all(c.layout == 'brats2023' and sorted(c.paths) == sorted(MODS) and c.seg is not None for c in cases)

def test_cli_anatomy(cli_dataset):
    "Skull-stripped brains on the MNI152 anatomy: zero outside, about a real brain's volume, brains that differ between subjects"
    subs = _load(cli_dataset[0])
    vols, masks = [], []
    for sid, imgs in subs.items():
        t1 = np.asarray(imgs['t1n'].dataobj)
        brain = t1 > 0
        for m in MODS: assert ((np.asarray(imgs[m].dataobj) > 0) == brain).mean() > 0.999, (sid, m)
        vols.append(brain.sum() * 1.875**3 / 1000)
        masks.append(brain)
    assert 1200 < np.mean(vols) < 2100, vols       # mL: the template brain (with its CSF) is about 1.9 L
    assert np.std(vols) / np.mean(vols) > 0.02, vols
    assert all(2 * (a & b).sum() / (a.sum() + b.sum()) < 0.97 for a, b in zip(masks, masks[1:]))

def test_cli_enhancement_only_in_t1c(cli_dataset):
    "Lesions in most subjects; the enhancing rim is bright against the oedema in T1c but not in T1n"
    subs = _load(cli_dataset[0])
    with_lesion = 0
    for sid, imgs in subs.items():
        seg = np.asarray(imgs['seg'].dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
        if not (seg == 3).sum() > 20 or not (seg == 2).sum() > 20: continue
        with_lesion += 1
        rim, sur = seg == 3, seg == 2
        ratio = {m: float(np.asarray(imgs[m].dataobj)[rim].mean() / np.asarray(imgs[m].dataobj)[sur].mean()) for m in MODS}
        assert ratio['t1c'] > 1.25 and ratio['t1c'] > 1.3 * ratio['t1n'], (sid, ratio)
        assert ratio['t1n'] < 1.15, (sid, ratio)
    assert with_lesion >= 10, with_lesion

def test_lesions_in_most_subjects():
    has = [bool(make_phantom(subject_seed(0, i), size=24, modalities=('t2f',)).seg.any()) for i in range(30)]
    assert 0.6 <= np.mean(has) <= 0.95, np.mean(has)
    assert make_phantom(3, size=32, lesion=False, modalities=('t1c',)).seg.max() == 0
    seg = make_phantom(3, size=32, lesion=True, modalities=('t1c',)).seg
    assert {1, 2, 3} <= set(np.unique(seg)) or {2, 3} <= set(np.unique(seg))

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_csf_contrast(seed):
    ph = make_phantom(seed, size=64, modalities=PHANTOM_MODALITIES)
    v, wm = ph.mask('ventricle', 0.7), ph.mask('wm')   # at 3.75 mm few ventricle voxels are pure
    assert v.sum() > 30
    m = {k: (img[v].mean(), img[wm].mean()) for k, img in ph.images.items()}
    assert m['t2w'][0] > 2 * m['t2w'][1], m        # CSF bright in T2w
    assert m['t2f'][0] < 0.6 * m['t2f'][1], m      # and dark in FLAIR
    assert m['t1n'][0] < 0.7 * m['t1n'][1], m      # and dark in T1
    for img in ph.images.values(): assert img.dtype == np.float32 and img.min() >= 0 and np.isfinite(img).all()

def test_byte_identical_and_seed_dependent(tmp_path):
    "Two command-line runs with the same seed give the same bytes; other seeds give other subjects"
    for name, seed, workers in (('a', 7, 1), ('b', 7, 2), ('c', 8, 1)):   # b: two processes, one subject each
        r = _cli('--out', tmp_path/name, '--subjects', 2, '--size', 40, '--seed', seed, '--pd', '--workers', workers)
        assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path/'a') for p in (tmp_path/'a').rglob('*.nii.gz'))
    assert len(files) == 2 * 6
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()
    for f in files: assert md5(tmp_path/'a'/f) == md5(tmp_path/'b'/f), f
    assert md5(tmp_path/'a'/files[-1]) != md5(tmp_path/'c'/files[-1])
    t0, t1 = make_phantom(0, size=48).tissues, make_phantom(1, size=48).tissues
    assert (t0 != t1)[(t0 > 0) | (t1 > 0)].mean() > 0.2
    a, b = make_phantom(5, size=48), make_phantom(5, size=48)
    for k in a.images: np.testing.assert_array_equal(a.images[k], b.images[k])
    np.testing.assert_array_equal(a.seg, b.seg)

def test_only_our_files_are_touched(tmp_path):
    (tmp_path/'README.txt').write_text('keep')
    d = tmp_path/'BraTS-PHA-00000-000'; d.mkdir()
    (d/'notes.txt').write_text('keep too')
    write_phantom_dataset(tmp_path, subjects=1, size=24, progress=False)
    assert (tmp_path/'README.txt').read_text() == 'keep' and (d/'notes.txt').read_text() == 'keep too'
    (d/'BraTS-PHA-00000-000-t1n.nii.gz').unlink(); (d/'BraTS-PHA-00000-000-t1n.nii.gz').mkdir()
    with pytest.raises(ValueError, match='not a regular file'): write_phantom_dataset(tmp_path, subjects=1, size=24, progress=False)

def test_bad_arguments(tmp_path):
    r = _cli('--out', tmp_path/'x', '--subjects', 0)
    assert r.returncode == 2 and 'subjects=0' in r.stderr
    with pytest.raises(ValueError, match='cannot simulate'): make_phantom(0, size=24, modalities=('t1n', 'ct'))
    with pytest.raises(ValueError, match='1.5 to 3'): make_phantom(0, size=24, field_strength=7)
    (tmp_path/'f').write_text('x')
    with pytest.raises(ValueError, match='not a folder'): phantom_cmd(str(tmp_path/'f'), subjects=1, size=24)

def test_artefacts():
    "With a head (air around it), ghosting moves signal into the air of the series asked for only; 'noise' raises the noise floor"
    base = make_phantom(2, size=48, lesion=True, head=True)
    gh = make_phantom(2, size=48, lesion=True, head=True, artefact='ghost', artefact_modality='t2f')
    for m in ('t1n', 't1c', 't2w'): np.testing.assert_array_equal(gh.images[m], base.images[m])
    air = base.tissues == 0
    assert gh.images['t2f'][air].mean() > 1.3 * base.images['t2f'][air].mean()
    nz = make_phantom(2, size=48, lesion=True, head=True, artefact='noise')
    for m in MODS: assert np.median(nz.images[m][air]) > 2.5 * np.median(base.images[m][air])   # sigma x 4; ghosts and Rician bias below the head make it less

def test_snr_scale_on_disk(tmp_path):
    "A dataset of varying acquisition quality: the same anatomy and labels, the subjects' SNRs drawn in the range, reproducibly"
    kw = dict(subjects=2, size=32, seed=3, progress=False, head=True)   # with a head: the air around it holds noise alone
    nom = write_phantom_dataset(tmp_path/'nom', **kw)
    var = write_phantom_dataset(tmp_path/'var', snr_scale=(0.25, 1.), **kw)
    again = write_phantom_dataset(tmp_path/'again', snr_scale=(0.25, 1.), **kw)
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()
    for a, b, c in zip(nom, var, again):
        seg = f'{a.name}-seg.nii.gz'
        assert md5(a/seg) == md5(b/seg)
        for m in MODS:
            f = f'{a.name}-{m}.nii.gz'
            assert md5(b/f) == md5(c/f) and md5(a/f) != md5(b/f), f
    # the background's noise grows as the SNR falls, never by more than the range allows (4x; 10 % slack for the median)
    ratios = []
    for a, b in zip(nom, var):
        for m in MODS:
            x, y = (nib.load(d/f'{d.name}-{m}.nii.gz').get_fdata() for d in (a, b))
            air = x < np.percentile(x, 40)   # the air around the head: noise alone
            ratios.append(np.median(y[air]) / np.median(x[air]))
    assert min(ratios) > 0.9 and max(ratios) < 4.4 and max(ratios) > 1.3, ratios

def test_cli_head(tmp_path):
    "`--head` keeps the skull and scalp (signal and noise outside the brain); the default is skull-stripped; the same brain and labels"
    for name, extra in (('stripped', ()), ('head', ('--head',))):
        r = _cli('--out', tmp_path/name, '--subjects', 1, '--size', 32, '--workers', 1, *extra)
        assert r.returncode == 0, r.stderr
    sid = 'BraTS-PHA-00000-000'
    load = lambda n, k: np.asarray(nib.load(tmp_path/n/sid/f'{sid}-{k}.nii.gz').dataobj)
    np.testing.assert_array_equal(load('stripped', 'seg'), load('head', 'seg'))
    s, h = load('stripped', 't1n'), load('head', 't1n')
    assert (s == 0).mean() > 0.5 and (h > 0).mean() > 0.99
    assert h[(s == 0)].mean() > 0

def test_cli_snr_range(tmp_path):
    "`med-k2n phantom --snr-low/--snr-high`: another subject's noise, the same labels; a reversed range is refused before writing"
    for name, extra in (('nom', ()), ('var', ('--snr-low', 0.25, '--snr-high', 0.5))):
        r = _cli('--out', tmp_path/name, '--subjects', 1, '--size', 32, *extra)
        assert r.returncode == 0, r.stderr
    sid = 'BraTS-PHA-00000-000'
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()
    assert md5(tmp_path/'nom'/sid/f'{sid}-seg.nii.gz') == md5(tmp_path/'var'/sid/f'{sid}-seg.nii.gz')
    assert md5(tmp_path/'nom'/sid/f'{sid}-t2w.nii.gz') != md5(tmp_path/'var'/sid/f'{sid}-t2w.nii.gz')
    r = _cli('--out', tmp_path/'bad', '--subjects', 1, '--size', 32, '--snr-low', 0.5, '--snr-high', 0.25)
    assert r.returncode == 2 and '0 < low <= high' in r.stderr and not (tmp_path/'bad').exists(), r.stderr

def test_field_strength_and_pd():
    ph = make_phantom(1, size=32, field_strength=1.5, modalities=('pd', 't2f'))
    assert list(ph.images) == ['pd', 't2f'] and ph.params['field_strength'] == 1.5
    assert ph.params['sequences']['t2f']['TI'] < make_phantom(1, size=32, modalities=('t2f',), field_strength=3).params['sequences']['t2f']['TI']
    drawn = [make_phantom(s, size=16, modalities=('t2f',)).params['field_strength'] for s in range(30)]
    assert set(drawn) == {1.5, 3.0}
