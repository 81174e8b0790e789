"Slice cache, splits, datasets, DataLoaders and `med-k2n prepare` (med_k2n.data)"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import json, subprocess, sys, time, warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import med_k2n.io as kio
from med_k2n import data as D

MS = ('t1n', 't1c', 't2w', 't2f')


def make_dataset(root:Path, n:int=4, shape=(24, 20, 8), drop:dict|None=None, start:int=0) -> list:
    "A tiny BraTS-2023-style tree of `n` subjects with an ellipsoid 'brain' whose contrast differs per modality"
    drop = drop or {}
    X, Y, Z = shape
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in shape], indexing='ij'))
    r = np.sqrt((g[0] / 0.8) ** 2 + (g[1] / 0.8) ** 2 + (g[2] / 0.9) ** 2)
    names = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        name = f'BraTS-GLI-{i:05d}-000'
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(MS):
            if m in drop.get(i, ()): continue
            v = (r < 1) * (100 + 40 * k + 30 * np.cos((k + 2) * g[0] + i)) + rng.normal(0, 1, shape) ** 2
            nib.save(nib.Nifti1Image(v.astype(np.float32), np.diag([1., 1., 1., 1.])), d / f'{name}-{m}.nii.gz')
        names.append(name)
    return names


@pytest.fixture
def ds(tmp_path):
    root = tmp_path / 'data'
    names = make_dataset(root, 5, drop={1: ('t1c',), 4: ('t1n', 't1c', 't2f')})
    return root, names


def quiet_prepare(*a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return D.prepare(*a, progress=False, **k)


def test_cache_build_reuse_and_new_parameters(ds, monkeypatch):
    root, names = ds
    with pytest.warns(UserWarning, match=r'skipping 1 subject.*BraTS-GLI-00004-000 \(t2w\)'):
        c = D.prepare(root, size=16, progress=False)
    assert c.subjects == names[:4] and c.size == 16 and c.modalities == MS
    assert c.root.parent == root / '.med_k2n_cache' and (c.root / 'meta.json').exists()
    assert (c.root.parent / 'splits.json').exists()
    a = c.load(names[0])
    assert a['x'].dtype == np.float16 and a['x'].shape == (4, 8, 16, 16)
    assert a['mask'].shape == (8, 16, 16) and a['fg'].shape == (8,) and a['stats'].shape == (4, 2)
    assert 0 <= a['x'].min() and a['x'].max() <= 1 and a['x'].max() > 0.9
    meta = json.loads((c.root / 'meta.json').read_text())
    assert meta['params']['size'] == 16 and meta['modalities'] == list(MS) and 'version' in meta
    assert meta['skipped'] == {names[4]: ['t2w']}

    # second run: no NIfTI is read
    def boom(*a, **k): raise AssertionError('load_case called on a cache hit')
    monkeypatch.setattr(kio, 'load_case', boom)
    t0 = time.time()
    c2 = quiet_prepare(root, size=16)
    assert time.time() - t0 < 5
    assert c2.root == c.root and c2.splits == c.splits and c2.subjects == c.subjects
    # a changed parameter builds a new cache (and so needs the NIfTI files)
    with pytest.raises(AssertionError, match='load_case called'): quiet_prepare(root, size=12)
    monkeypatch.undo()
    c3 = quiet_prepare(root, size=12)
    assert c3.root != c.root and c3.root.parent == c.root.parent and c3.load(names[0])['x'].shape[2:] == (12, 12)
    assert c3.splits == c.splits
    assert D.SliceCache.open(c.root).subjects == c.subjects


def test_changed_or_new_subject_rebuilds_only_that_one(ds, monkeypatch):
    root, names = ds
    c = quiet_prepare(root, size=16)
    seen = []
    real = kio.load_case
    monkeypatch.setattr(kio, 'load_case', lambda case, *a, **k: seen.append(case.subject) or real(case, *a, **k))
    f = next((root / names[2]).glob('*-t2w.nii.gz'))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    new = make_dataset(root, 1, start=7)
    c2 = quiet_prepare(root, size=16)
    assert sorted(seen) == sorted([names[2]] + new)
    assert c2.subjects == sorted(names[:4] + new)
    for k in D.SPLITS: assert set(c.splits[k]) <= set(c2.splits[k])


def test_missing_modality_is_kept_with_zeros(ds):
    root, names = ds
    c = quiet_prepare(root, size=16)
    a = c.load(names[1])
    assert a['present'].tolist() == [True, False, True, True]
    assert np.all(a['x'][1] == 0) and a['x'][0].max() > 0 and np.all(a['stats'][1] == 0)
    assert names[4] not in c.subjects and all(names[4] not in v for v in c.splits.values())


def test_splits_disjoint_seeded_reused(tmp_path):
    root = tmp_path / 'data'
    names = make_dataset(root, 10, shape=(12, 12, 4))
    c = quiet_prepare(root, size=8, cache=tmp_path / 'c0')
    sp = c.splits
    assert sorted(sum(sp.values(), [])) == names
    assert all(not set(sp[a]) & set(sp[b]) for a in D.SPLITS for b in D.SPLITS if a != b)
    assert [len(sp[k]) for k in D.SPLITS] == [7, 1, 2]
    assert quiet_prepare(root, size=8, cache=tmp_path / 'c1').splits == sp          # seeded: same seed, same draw
    other = [quiet_prepare(root, size=8, cache=tmp_path / f's{s}', seed=s).splits for s in (1, 2, 3)]
    assert any(o['test'] != sp['test'] for o in other)                              # the seed matters
    # reused: another seed on the same cache root keeps the file's splits, with a warning
    with pytest.warns(UserWarning, match='kept as is'):
        c2 = D.prepare(root, size=8, cache=tmp_path / 'c0', seed=5, progress=False)
    assert c2.splits == sp
    saved = json.loads((tmp_path / 'c0' / 'splits.json').read_text())
    assert saved['seed'] == 0 and {k: saved[k] for k in D.SPLITS} == sp


def test_dataloaders_batch_and_test_split(tmp_path):
    from med_k2n.phantom import write_phantom_dataset
    root = tmp_path / 'pha'
    write_phantom_dataset(root, subjects=4, size=32, seed=0, progress=False)
    dls = D.k2n_dataloaders(root, size=32, bs=4, device='cpu')
    x, p, m = dls.one_batch()
    assert x.shape == (4, 4, 32, 32) and x.dtype == torch.float32
    assert p.shape == (4, 4) and p.dtype == torch.bool and bool(p.all())
    assert m.shape == (4, 1, 32, 32)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    assert dls.n_inp == 3 and dls.modalities == MS and dls.size == 32 and isinstance(dls.cache, D.SliceCache)
    tr, va = dls.train_ds, dls.valid_ds
    assert all(f >= 0.05 for f in (float(dls.cache.load(s)['fg'][z]) for s, z in tr.index))
    te = D.test_dataset(dls.cache)
    assert len(te) == dls.cache.n_slices('test') and {s for s, _ in te.index} == set(dls.cache.splits['test'])
    assert not {s for s, _ in te.index} & {s for s, _ in tr.index}
    tdl = dls.valid.new(te)
    assert torch.equal(tdl.one_batch()[0][0], te[0][0])                             # not augmented
    assert torch.equal(dls.valid.one_batch()[0][0], va[0][0])
    fig = D.show_batch(dls, max_n=2)
    assert len(fig.axes) == 2 * 5


def test_augmentation_is_joint_and_train_only():
    torch.manual_seed(0)
    m = (torch.rand(6, 1, 24, 24) > 0.5).float()
    m = torch.nn.functional.avg_pool2d(m, 5, 1, 2).round()          # blobs, not noise
    x = m.repeat(1, 4, 1, 1)
    p = torch.tensor([[True, False, True, True]] * 6)
    tf = D.JointAffine(seed=0)
    ax, ap, am = tf((x, p, m), split_idx=0)
    for k in range(1, 4): assert torch.equal(ax[:, k], ax[:, 0])
    assert torch.equal(ap, p)
    assert set(am.unique().tolist()) <= {0., 1.}
    assert ((ax[:, :1] > 0.5) == (am > 0.5)).float().mean() > 0.95
    assert not torch.equal(ax, x) and 0 <= ax.min() and ax.max() <= 1
    vx = D.JointAffine(seed=0)((x, p, m), split_idx=1)[0]
    assert torch.equal(vx, x)
    # a pure flip (no rotation/scale/shift) is an exact mirror of every channel and of the mask
    fl = D.JointAffine(p_flip=1., max_rotate=0., scale=(1., 1.), max_translate=0., seed=0)
    fx, _, fm = fl((x, p, m), split_idx=0)
    assert torch.allclose(fx, x.flip(-1), atol=1e-5) and torch.equal(fm, m.flip(-1))


def _cli(*args, cwd=None):
    code = "import sys; from med_k2n.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})


def test_prepare_cli_end_to_end(tmp_path):
    root = tmp_path / 'data'
    make_dataset(root, 4)
    r = _cli('prepare', '--data', str(root), '--size', '16')
    assert r.returncode == 0, r.stderr
    c = D.SliceCache.open(root / '.med_k2n_cache')
    assert str(c.root) in r.stdout and 'train' in r.stdout and 'done in' in r.stdout
    assert f"test :     1 subjects" in r.stdout and c.size == 16


def test_prepare_cli_workers_same_cache_and_errors_name_the_file(tmp_path):
    "Two processes build the cache one builds; a broken file in a worker is reported with its path"
    root = tmp_path / 'data'
    make_dataset(root, 4)
    for name, w in (('one', 1), ('two', 2)):
        r = _cli('prepare', '--data', str(root), '--size', '16', '--cache', str(tmp_path/name), '--workers', str(w))
        assert r.returncode == 0, r.stderr
    a, b = D.SliceCache.open(tmp_path/'one'), D.SliceCache.open(tmp_path/'two')
    assert a.subjects == b.subjects and a.splits == b.splits
    for s in a.subjects:
        for k in ('x', 'mask', 'fg'): np.testing.assert_array_equal(a.load(s)[k], b.load(s)[k])
    bad = sorted(root.rglob('*.nii.gz'))[-1]
    bad.write_bytes(b'not a nifti file')
    r = _cli('prepare', '--data', str(root), '--size', '16', '--cache', str(tmp_path/'three'), '--workers', '2')
    assert r.returncode == 2 and bad.name in r.stderr, r.stderr


def test_prepare_cli_no_nifti(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('nothing here')
    r = _cli('prepare', '--data', str(tmp_path / 'empty'))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('med-k2n prepare: error:') and 'NIfTI' in lines[0]
    r = _cli('prepare', '--data', str(tmp_path / 'nope'))
    assert r.returncode == 2 and 'does not exist' in r.stderr


def test_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a med_k2n slice cache'): D.SliceCache.open(tmp_path)
    with pytest.raises(FileNotFoundError, match='does not exist'): D.SliceCache.open(tmp_path / 'x')


def test_phantom_foreground_is_the_head_not_the_whole_slice(tmp_path):
    from med_k2n.phantom import write_phantom_dataset
    write_phantom_dataset(tmp_path / 'pha', subjects=1, size=32, seed=0, progress=False)
    c = quiet_prepare(tmp_path / 'pha', size=32)
    a = c.load(c.subjects[0])
    assert a['fg'].mean() < 0.8                                   # the head does not fill the whole field of view
    assert not a['mask'][:, 0, 0].any()                           # nor the image corners
