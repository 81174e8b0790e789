"Acceptance tests of the physics phantom and `med-k2n phantom` (SPEC §2.1)"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import hashlib, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import nibabel as nib
import pytest

from med_k2n.phantom import (make_phantom, write_phantom_dataset, phantom_cmd, subject_seed, TISSUE_LABEL,
                             PHANTOM_MODALITIES)

MODS = ('t1n', 't1c', 't2w', 't2f')

def _cli(*args):
    exe = shutil.which('med-k2n')
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from med_k2n.cli import main; sys.exit(main())']
    return subprocess.run(cmd + ['phantom', *map(str, args)], capture_output=True, text=True, timeout=300)

@pytest.fixture(scope='module')
def cli_dataset(tmp_path_factory):
    "The acceptance run: 4 subjects at 96 px through the command line, timed"
    out = tmp_path_factory.mktemp('ph') / 'data'
    t0 = time.time()
    r = _cli('--out', out, '--subjects', 4, '--size', 96)
    dt = time.time() - t0
    assert r.returncode == 0, r.stderr
    return out, dt, r.stdout

def _load(out):
    subs = {}
    for d in sorted(Path(out).iterdir()):
        subs[d.name] = {f.name[len(d.name)+1:-len('.nii.gz')]: nib.load(f) for f in d.glob('*.nii.gz')}
    return subs

def test_cli_layout_and_time(cli_dataset):
    out, dt, stdout = cli_dataset
    assert dt < 60, f"med-k2n phantom took {dt:.1f} s for 4 subjects at 96 px"
    assert 'wrote 4 phantom subjects' in stdout
    subs = _load(out)
    assert list(subs) == [f'BraTS-PHA-{i:05d}-000' for i in range(4)]
    ref = None
    for sid, imgs in subs.items():
        assert sorted(imgs) == sorted(MODS + ('seg',)), (sid, sorted(imgs))
        for k, img in imgs.items():
            assert img.shape == (96, 96, 62)
            assert img.get_data_dtype() == (np.uint8 if k == 'seg' else np.float32)
            if ref is None: ref = img.affine
            np.testing.assert_array_equal(img.affine, ref)
    np.testing.assert_allclose(np.diag(ref)[:3], [2.5, 2.5, 2.5])
    assert nib.aff2axcodes(ref) == ('R', 'A', 'S')
    assert not list(Path(out).rglob('.tmp-*'))

def test_cli_enhancement_only_in_t1c(cli_dataset):
    "Lesions in most subjects; the enhancing rim is bright against the oedema in T1c but not in T1n"
    subs = _load(cli_dataset[0])
    with_lesion = 0
    for sid, imgs in subs.items():
        seg = np.asarray(imgs['seg'].dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
        if not (seg == 3).any(): continue
        with_lesion += 1
        rim, sur = seg == 3, seg == 2
        ratio = {m: float(np.asarray(imgs[m].dataobj)[rim].mean() / np.asarray(imgs[m].dataobj)[sur].mean()) for m in MODS}
        assert ratio['t1c'] > 1.25 and ratio['t1c'] > 1.3 * ratio['t1n'], (sid, ratio)
        assert ratio['t1n'] < 1.15, (sid, ratio)
    assert with_lesion >= 2

def test_lesions_in_most_subjects():
    has = [bool(make_phantom(subject_seed(0, i), size=24, modalities=('t2f',)).seg.any()) for i in range(30)]
    assert 0.6 <= np.mean(has) <= 0.95, np.mean(has)
    assert make_phantom(3, size=32, lesion=False, modalities=('t1c',)).seg.max() == 0
    seg = make_phantom(3, size=32, lesion=True, modalities=('t1c',)).seg
    assert {1, 2, 3} <= set(np.unique(seg)) or {2, 3} <= set(np.unique(seg))

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_csf_contrast(seed):
    ph = make_phantom(seed, size=64, modalities=PHANTOM_MODALITIES)
    v, wm = ph.tissues == TISSUE_LABEL['ventricle'], ph.tissues == TISSUE_LABEL['wm']
    assert v.sum() > 50
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
    assert (t0 != t1).mean() > 0.05
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
    base = make_phantom(2, size=48, lesion=True)
    gh = make_phantom(2, size=48, lesion=True, artefact='ghost', artefact_modality='t2f')
    for m in ('t1n', 't1c', 't2w'): np.testing.assert_array_equal(gh.images[m], base.images[m])
    air = base.tissues == 0
    assert gh.images['t2f'][air].mean() > 1.3 * base.images['t2f'][air].mean()
    nz = make_phantom(2, size=48, lesion=True, artefact='noise')
    for m in MODS: assert np.median(nz.images[m][air]) > 3 * np.median(base.images[m][air])

def test_snr_scale_on_disk(tmp_path):
    "A dataset of varying acquisition quality: the same anatomy and labels, the subjects' SNRs drawn in the range, reproducibly"
    nom = write_phantom_dataset(tmp_path/'nom', subjects=2, size=32, seed=3, progress=False)
    var = write_phantom_dataset(tmp_path/'var', subjects=2, size=32, seed=3, progress=False, snr_scale=(0.25, 1.))
    again = write_phantom_dataset(tmp_path/'again', subjects=2, size=32, seed=3, progress=False, snr_scale=(0.25, 1.))
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
    assert ph.params['sequences']['t2f']['TI'] < make_phantom(1, size=32, modalities=('t2f',)).params['sequences']['t2f']['TI']
