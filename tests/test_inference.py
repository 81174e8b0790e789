"Volume inference (med_k2n.inference): outputs on the input grid, preprocessing as in training, errors, atomic writing"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import med_k2n.io as kio
from med_k2n.inference import synthesize, synthesize_to, load_model, resolve_case, resolve_targets
from med_k2n.learner import save_model
from med_k2n.model import MedK2N
from med_k2n.baseline import UNetBaseline

SHAPE = (40, 28, 7)   # not square in-plane: exercises the resize and padding of the slices


def head(shape=SHAPE, scale=1.0, seed=0):
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in shape], indexing='ij'))
    r = np.sqrt((g[0] / .8) ** 2 + (g[1] / .8) ** 2 + (g[2] / .95) ** 2)
    v = np.where(r < 1, 100 * scale * (1 + (r < .5) + .3 * g[0]), 0) + np.random.default_rng(seed).random(shape)
    return v.astype(np.float32)


def oblique_affine():
    "LPI-ish voxel order with a small rotation and anisotropic voxels"
    th = np.deg2rad(8)
    R = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    a = np.eye(4); a[:3, :3] = R @ np.diag([-0.9, -1.1, -2.5]); a[:3, 3] = [20, 15, 9]
    return a


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('inf')
    files = {}
    (d / 'case').mkdir()
    for i, m in enumerate(('t1n', 't2f', 't2w')):
        img = nib.Nifti1Image(head(scale=1 + i / 2, seed=i), oblique_affine())
        img.header['descrip'] = b'inference test'; img.header.set_xyzt_units('mm', 'sec')
        files[m] = d / 'case' / f'case_{m}.nii.gz'; nib.save(img, files[m])
    torch.manual_seed(0)
    save_model(MedK2N.from_preset('cpu', size=32), d / 'model')
    return dict(dir=d, files=files, model=load_model(d / 'model'))


def test_outputs_on_input_grid(setup):
    f, model = setup['files'], setup['model']
    res = synthesize({'t1n': f['t1n'], 't2f': f['t2f']}, 'missing', model, progress=False, bs=3)
    assert res['targets'] == ('t1c', 't2w') and res['subject'] == 'case'
    ref = nib.load(f['t1n'])
    mask = res['mask'].get_fdata() > 0
    assert mask.any() and not mask.all()
    for t in res['targets']:
        for img in (res['images'][t], res['quality'][t]):
            assert img.shape == ref.shape
            np.testing.assert_allclose(img.affine, ref.affine)
            np.testing.assert_allclose(img.header.get_sform(), ref.header.get_sform())
            assert img.header['descrip'] == ref.header['descrip'] and img.header.get_xyzt_units() == ref.header.get_xyzt_units()
            a = img.get_fdata()
            assert np.isfinite(a).all() and a.min() >= 0 and not a[~mask].any()
        assert res['images'][t].get_fdata().max() <= 1
        assert set(res['weights'][t]) == {'t1n', 't2f'} and res['weights'][t]['t1n'] == 1.0
        assert 0 <= res['scores'][t] <= 1.5


def test_folder_case_default_inputs_and_resample(setup):
    f, model, d = setup['files'], setup['model'], setup['dir']
    c, ins = resolve_case(d / 'case', model.modalities, targets=['t1c'])   # generic layout <subject>/<subject>_<modality>
    assert ins == ('t1n', 't2w', 't2f') and c.subject == 'case'
    # a grid mismatch is refused with the hint, and accepted with resample=True
    other = nib.Nifti1Image(head((36, 28, 7), seed=5), oblique_affine())
    with pytest.raises(ValueError, match='resample'):
        synthesize({'t1n': f['t1n'], 't2f': other}, 't1c', model, progress=False)
    r = synthesize({'t1n': f['t1n'], 't2f': other}, 't1c', model, progress=False, resample=True)
    assert r['images']['t1c'].shape == SHAPE


def test_errors(setup):
    f, model = setup['files'], setup['model']
    with pytest.raises(ValueError, match='both an input and a target'): resolve_targets(['t1n'], ('t1n',), model.modalities)
    with pytest.raises(ValueError, match='nothing to synthesise'): resolve_targets('missing', model.modalities, model.modalities)
    with pytest.raises(ValueError, match="unknown modality 'foo'"): synthesize({'foo': f['t1n']}, 't1c', model, progress=False)
    ixi = MedK2N.from_preset('cpu', modalities='ixi', size=32)
    with pytest.raises(ValueError, match='cannot take t2f as input'): synthesize({'t1n': f['t1n'], 't2f': f['t2f']}, 't2w', ixi, progress=False)
    with pytest.raises(ValueError, match='cannot synthesise t1c'): synthesize({'t1n': f['t1n']}, 't1c', ixi, progress=False)


def test_synthesize_to_atomic_and_safe(setup, tmp_path):
    f, model = setup['files'], setup['model']
    out = tmp_path / 'o'
    r = synthesize_to({'t1n': f['t1n']}, ['t2w', 't1c'], model, out, progress=False, intensity='reference')
    names = sorted(p.name for p in out.iterdir())
    assert names == ['case_synth.json', 'case_t1c.nii.gz', 'case_t1c_quality.nii.gz', 'case_t2w.nii.gz', 'case_t2w_quality.nii.gz']
    js = json.loads((out / 'case_synth.json').read_text())
    assert js['targets'] == ['t1c', 't2w'] and js['intensity'] == 'reference'
    a = nib.load(out / 'case_t1c.nii.gz').get_fdata()
    assert a.max() > 1.5   # scaled to the t1n's intensity range, not [0, 1]
    # the output folder holds the inputs under the output names: refused before anything is written
    with pytest.raises(ValueError, match='refusing to overwrite input'):
        synthesize_to({'t1n': out / 'case_t2w.nii.gz'}, 't2w', model, out, progress=False, subject='case')
    # a failure while writing leaves nothing behind
    class Boom(Exception): pass
    out2 = tmp_path / 'o2'
    orig = nib.save
    calls = []
    def bad_save(img, path):
        calls.append(path)
        if len(calls) == 2: raise Boom()
        orig(img, path)
    nib.save = bad_save
    try:
        with pytest.raises(Boom): synthesize_to({'t1n': f['t1n']}, 't2w', model, out2, progress=False)
    finally: nib.save = orig
    assert not out2.exists()


def test_baseline(setup):
    f = setup['files']
    r = synthesize({'t1n': f['t1n'], 't2f': f['t2f']}, 't1c', UNetBaseline(size=32, base=8), progress=False)
    assert r['quality'] == {} and r['weights'] == {'t1c': {'t1n': 0.5, 't2f': 0.5}}
    assert r['images']['t1c'].shape == SHAPE


def test_label_map_input_refused_and_brasyn_layout(setup, tmp_path):
    f, model = setup['files'], setup['model']
    lab = tmp_path/'case_t2w.nii.gz'
    nib.save(nib.Nifti1Image((head() > 150).astype(np.uint8) * 2, oblique_affine()), lab)   # a mask saved under a modality's name
    with pytest.raises(ValueError, match=r'case_t2w.nii.gz holds only the values 0, 2: it looks like a segmentation'):
        synthesize({'t1n': f['t1n'], 't2w': lab}, 't1c', model, progress=False)
    out = tmp_path/'b'
    synthesize_to({'t1n': f['t1n'], 't2f': f['t2f']}, 't1c', model, out, layout='brasyn', progress=False)
    assert sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()) == ['.synth-records/case.json', 'case-t1c.nii.gz']
    img = nib.load(out/'case-t1c.nii.gz')
    np.testing.assert_allclose(img.affine, nib.load(f['t1n']).affine)
    assert img.get_fdata().max() > 1.5   # on the t1n's intensity scale, not [0, 1]
    with pytest.raises(ValueError, match='BraSyn layout'):
        synthesize_to({'t1n': f['t1n']}, 't1c', model, tmp_path/'c', layout='brasyn', intensity='unit', progress=False)
    assert not (tmp_path/'c').exists()
