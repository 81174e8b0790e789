"Bad inputs of SPEC §2 and dataset layouts: every error names the file (and subject/modality where relevant)"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import gzip, warnings
from pathlib import Path

import numpy as np
import nibabel as nib
import pytest

import med_k2n.io as mio
from med_k2n.io import (Case, CaseVolumes, find_cases, load_volume, load_case, foreground_mask, normalize, denormalize,
                        NormStats, atomic_path, atomic_write, save_nifti, check_not_input, save_like, image_like)

SHAPE = (12, 10, 8)
LPS = np.diag([-1., -1., 1., 1.]); LPS[:3, 3] = [5, 7, -3]


def blob(seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing='ij'))
    r = np.sqrt(((g / 0.8) ** 2).sum(0))
    return (np.clip(1.2 - r, 0, None) * 100 + rng.random(shape) * 5).astype(np.float32)


def write(path, data=None, affine=LPS, dtype=np.float32):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    data = blob() if data is None else data
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine); img.header.set_data_dtype(dtype)
    nib.save(img, path)
    return path


def case_of(tmp_path, files, subject='subj01'):
    "Write a generic subject folder; `files` maps a file name to (data, affine) or None (default blob)"
    d = tmp_path / subject
    for i, (name, spec) in enumerate(files.items()):
        data, aff = spec if spec is not None else (blob(i), LPS)
        write(d / name, data, aff)
    cs = find_cases(tmp_path)
    assert len(cs) == 1
    return cs[0]


# ---------------------------------------------------------------- unreadable files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.nii.gz'):
        load_volume(tmp_path / 'nope.nii.gz')


def test_truncated_gz(tmp_path):
    p = write(tmp_path / 'subj01' / 't1.nii.gz')
    raw = p.read_bytes(); p.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match='t1.nii.gz') as e:
        load_volume(p)
    assert 'unreadable, truncated or not NIfTI' in str(e.value)
    write(tmp_path / 'subj01' / 't2.nii.gz')
    with pytest.raises(ValueError) as e:
        load_case(find_cases(tmp_path)[0])
    assert 'subj01' in str(e.value) and 't1n' in str(e.value) and 't1.nii.gz' in str(e.value)


def test_truncated_uncompressed(tmp_path):
    p = write(tmp_path / 't1.nii')
    raw = p.read_bytes(); p.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match='t1.nii'):
        load_volume(p)


def test_text_renamed_nifti(tmp_path):
    p = tmp_path / 'notes.nii.gz'; p.write_text('this is not an image\n')
    with pytest.raises(ValueError, match='notes.nii.gz'):
        load_volume(p)
    q = tmp_path / 'gz.nii.gz'; q.write_bytes(gzip.compress(b'x' * 400))   # valid gzip, not NIfTI inside
    with pytest.raises(ValueError, match='gz.nii.gz'):
        load_volume(q)


# ---------------------------------------------------------------- bad contents
def test_4d_refused_singleton_squeezed(tmp_path):
    p = write(tmp_path / 'dwi4d.nii.gz', np.stack([blob(), blob(1)], -1))
    with pytest.raises(ValueError, match='dwi4d.nii.gz') as e:
        load_volume(p)
    assert '4-D' in str(e.value)
    img = load_volume(write(tmp_path / 'single.nii.gz', blob()[..., None]))
    assert img.ndim == 3 and img.shape == SHAPE


def test_2d_refused(tmp_path):
    p = write(tmp_path / 'flat.nii.gz', blob()[:, :, 0])
    with pytest.raises(ValueError, match='flat.nii.gz'):
        load_volume(p)


@pytest.mark.parametrize('bad,word', [(np.nan, 'NaN'), (np.inf, 'Inf'), (-np.inf, 'Inf')])
def test_nan_inf(tmp_path, bad, word):
    v = blob(); v[2, 3, 4] = bad
    p = write(tmp_path / 'subj01' / 'flair.nii.gz', v)
    with pytest.raises(ValueError, match='flair.nii.gz') as e:
        load_volume(p)
    assert word in str(e.value)
    with pytest.raises(ValueError) as e:
        load_case(find_cases(tmp_path)[0])
    assert 'subject subj01' in str(e.value) and 't2f' in str(e.value)


def test_all_zero(tmp_path):
    p = write(tmp_path / 'zero.nii.gz', np.zeros(SHAPE))
    with pytest.raises(ValueError, match='zero.nii.gz') as e:
        load_volume(p)
    assert 'all zero' in str(e.value)


def test_degenerate_affine(tmp_path):
    p = tmp_path / 'degenerate.nii.gz'
    hdr = nib.Nifti1Header(); hdr.set_data_shape(SHAPE); hdr.set_data_dtype(np.float32)
    hdr.set_sform(np.zeros((4, 4)), 1); hdr.set_qform(None, 0)
    nib.save(nib.Nifti1Image(blob(), None, hdr), p)      # affine=None: the zero sform is written as is
    assert not nib.load(p).affine[:3, :3].any()
    with pytest.raises(ValueError, match='degenerate.nii.gz'):
        load_volume(p)


def test_load_volume_canonical_float32(tmp_path):
    img = load_volume(write(tmp_path / 'i16.nii.gz', blob() * 10, dtype=np.int16))
    assert nib.aff2axcodes(img.affine) == ('R', 'A', 'S')
    assert np.asanyarray(img.dataobj).dtype == np.float32
    # LPS → RAS flips the first two axes
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), (blob() * 10).astype(np.int16)[::-1, ::-1, :].astype(np.float32))


# ---------------------------------------------------------------- grids
def test_grid_shape_differs(tmp_path):
    c = case_of(tmp_path, {'t1.nii.gz': None, 't2.nii.gz': (blob(2, (12, 10, 9)), LPS)})
    with pytest.raises(ValueError) as e:
        load_case(c)
    msg = str(e.value)
    for s in ('subj01', 't2w', 't2.nii.gz', 't1n', 'resample=True', '--resample', '(12, 10, 9)', '(12, 10, 8)'):
        assert s in msg, s
    cv = load_case(c, resample=True)
    assert cv.data['t2w'].shape == cv.data['t1n'].shape == SHAPE
    assert cv.data['t2w'].dtype == np.float32 and cv.data['t2w'].any()


def test_grid_affine_beyond_tolerance(tmp_path):
    moved = LPS.copy(); moved[:3, 3] += [0.6, 0, 0]
    c = case_of(tmp_path, {'t1.nii.gz': None, 'flair.nii.gz': (blob(3), moved)})
    with pytest.raises(ValueError) as e:
        load_case(c)
    msg = str(e.value)
    assert 'subj01' in msg and 't2f' in msg and 'flair.nii.gz' in msg and 'resample=True' in msg
    cv = load_case(c, resample=True)
    assert cv.modalities == ('t1n', 't2f') and cv.data['t2f'].shape == SHAPE
    # a shift of a whole voxel along x is reproduced by trilinear resampling (zero filled at the edge)
    m1 = LPS.copy(); m1[0, 3] += 1.0     # world x +1 mm: in LPS storage that is voxel i-1
    (tmp_path / 'subj01' / 'flair.nii.gz').unlink(); write(tmp_path / 'subj01' / 'flair.nii.gz', blob(), m1)
    cv = load_case(find_cases(tmp_path)[0], resample=True)
    np.testing.assert_allclose(cv.data['t2f'][1:], cv.data['t1n'][:-1], atol=1e-4)


def test_grid_within_tolerance_and_atol(tmp_path):
    near = LPS.copy(); near[1, 3] += 5e-4
    c = case_of(tmp_path, {'t1.nii.gz': None, 't2.nii.gz': (blob(1), near)})
    assert load_case(c).modalities == ('t1n', 't2w')
    with pytest.raises(ValueError, match='resample'):
        load_case(c, atol=1e-5)


def test_no_overlap_after_resample(tmp_path):
    far = LPS.copy(); far[:3, 3] += 500
    c = case_of(tmp_path, {'t1.nii.gz': None, 't2.nii.gz': (blob(1), far)})
    with pytest.raises(ValueError, match='do not overlap'):
        load_case(c, resample=True)


def test_seg_grid_and_resample(tmp_path):
    d = tmp_path / 'BraTS-GLI-00001-000'
    write(d / 'BraTS-GLI-00001-000-t1n.nii.gz', blob())
    lab = np.zeros((6, 5, 4)); lab[2:4, 1:3, 1:3] = 2
    half = LPS.copy(); half[:3, :3] *= 2
    write(d / 'BraTS-GLI-00001-000-seg.nii.gz', lab, half, np.uint8)
    c = find_cases(tmp_path)[0]
    with pytest.raises(ValueError) as e:
        load_case(c)
    assert 'segmentation' in str(e.value) and 'seg.nii.gz' in str(e.value) and 'resample' in str(e.value)
    cv = load_case(c, resample=True)
    assert cv.seg.shape == SHAPE and set(np.unique(cv.seg)) == {0, 2}     # nearest neighbour keeps labels


def test_all_zero_seg_is_fine(tmp_path):
    d = tmp_path / 'BraTS2021_00001'
    write(d / 'BraTS2021_00001_t1.nii.gz'); write(d / 'BraTS2021_00001_seg.nii.gz', np.zeros(SHAPE), dtype=np.uint8)
    cv = load_case(find_cases(tmp_path)[0])
    assert cv.seg is not None and not cv.seg.any() and np.issubdtype(cv.seg.dtype, np.integer)


# ---------------------------------------------------------------- discovery errors
def test_duplicate_modality(tmp_path):
    write(tmp_path / 'subj01' / 't1.nii.gz'); write(tmp_path / 'subj01' / 't1n.nii.gz')
    with pytest.raises(ValueError) as e:
        find_cases(tmp_path)
    msg = str(e.value)
    assert 'subj01' in msg and 'duplicate modality t1n' in msg and 't1.nii.gz' in msg and 't1n.nii.gz' in msg


def test_duplicate_modality_brats2021(tmp_path):
    d = tmp_path / 'BraTS2021_00001'
    write(d / 'BraTS2021_00001_t1ce.nii.gz'); write(d / 'BraTS2021_00001_t1gd.nii.gz')
    with pytest.raises(ValueError, match='duplicate modality t1c'):
        find_cases(tmp_path)


def test_unknown_modality_generic(tmp_path):
    write(tmp_path / 'subj01' / 't1.nii.gz'); write(tmp_path / 'subj01' / 'swi.nii.gz')
    with pytest.raises(ValueError) as e:
        find_cases(tmp_path)
    msg = str(e.value)
    assert 'swi.nii.gz' in msg and 'subj01' in msg and 'known modalities are t1n, t1c' in msg


def test_subject_without_usable_modality(tmp_path):
    write(tmp_path / 'subj01' / 't1.nii.gz'); write(tmp_path / 'subj02' / 'seg.nii.gz', dtype=np.uint8)
    with pytest.raises(ValueError) as e:
        find_cases(tmp_path)
    assert 'subject subj02 has no usable modality' in str(e.value) and 'seg.nii.gz' in str(e.value)
    c = find_cases(tmp_path / 'subj01')[0]
    with pytest.raises(ValueError, match='subject subj01 has no usable modality'):
        load_case(c, modalities='pd,adc')
    with pytest.raises(ValueError, match='no usable modality'):
        load_case(Case('empty', {}))


def test_empty_dataset(tmp_path):
    (tmp_path / 'subj01').mkdir(); (tmp_path / 'subj01' / 'readme.txt').write_text('nothing here')
    with pytest.raises(ValueError) as e:
        find_cases(tmp_path)
    msg = str(e.value)
    assert 'no NIfTI files' in msg and str(tmp_path) in msg and 'BraTS 2023' in msg and 'IXI' in msg and 'generic' in msg
    with pytest.raises(FileNotFoundError, match='not_there'):
        find_cases(tmp_path / 'not_there')


def test_named_layout_that_does_not_fit(tmp_path):
    write(tmp_path / 'subj01' / 't1.nii.gz')
    with pytest.warns(UserWarning, match='do not follow the brats2023 naming'):
        with pytest.raises(ValueError, match='no subject found') as e:
            find_cases(tmp_path, layout='brats2023')
    assert 'understood layouts' in str(e.value)
    with pytest.raises(ValueError, match='unknown layout'):
        find_cases(tmp_path, layout='nifti')


def test_hidden_and_temp_files_skipped(tmp_path):
    write(tmp_path / 'subj01' / 't1.nii.gz')
    (tmp_path / 'subj01' / '._t2.nii.gz').write_bytes(b'apple double')
    (tmp_path / 'subj01' / '.tmp-1234abcd-t2.nii.gz').write_bytes(b'partial')
    assert find_cases(tmp_path)[0].modalities == ('t1n',)


# ---------------------------------------------------------------- layouts
def test_brats2023_with_seg(tmp_path):
    for sub in ('BraTS-MEN-00004-000', 'BraTS-GLI-00002-001', 'BraTS-PHA-00000-000', 'BraTS-SSA-00010-000'):
        for m in ('t1n', 't1c', 't2w', 't2f', 'seg'):
            (tmp_path / sub).mkdir(exist_ok=True); (tmp_path / sub / f'{sub}-{m}.nii.gz').write_bytes(b'')
    cs = find_cases(tmp_path)
    assert [c.subject for c in cs] == ['BraTS-GLI-00002-001', 'BraTS-MEN-00004-000', 'BraTS-PHA-00000-000', 'BraTS-SSA-00010-000']
    for c in cs:
        assert c.layout == 'brats2023' and c.modalities == ('t1n', 't1c', 't2w', 't2f')
        assert c.seg.name == f'{c.subject}-seg.nii.gz' and 'seg' not in c.paths
    assert find_cases(tmp_path, layout='brats2023') == cs


def test_brats2021_with_seg_and_load(tmp_path):
    d = tmp_path / 'BraTS2021_00000'
    for i, m in enumerate(('t1', 't1ce', 't2', 'flair')): write(d / f'BraTS2021_00000_{m}.nii.gz', blob(i))
    write(d / 'BraTS2021_00000_seg.nii.gz', (blob() > 80).astype(np.uint8) * 4, dtype=np.uint8)
    (c,) = find_cases(tmp_path)
    assert c.layout == 'brats2021' and c.subject == 'BraTS2021_00000'
    assert c.modalities == ('t1n', 't1c', 't2w', 't2f') and c.seg.name == 'BraTS2021_00000_seg.nii.gz'
    assert c.paths['t1c'].name == 'BraTS2021_00000_t1ce.nii.gz'
    cv = load_case(c)
    assert isinstance(cv, CaseVolumes) and cv.reference_modality == 't1n' and set(np.unique(cv.seg)) == {0, 4}
    assert cv.paths == c.paths and cv.affine.shape == (4, 4) and nib.aff2axcodes(cv.affine) == ('R', 'A', 'S')


def test_isles2022(tmp_path):
    for i in (1, 2):
        s = f'sub-strokecase000{i}'
        for m in ('dwi', 'adc'):
            write(tmp_path / 'rawdata' / s / 'ses-0001' / 'dwi' / f'{s}_ses-0001_{m}.nii.gz', blob(i))
        write(tmp_path / 'rawdata' / s / 'ses-0001' / 'anat' / f'{s}_ses-0001_FLAIR.nii.gz', blob(i, (14, 12, 10)))
        write(tmp_path / 'derivatives' / s / 'ses-0002' / f'{s}_ses-0002_msk.nii.gz', np.zeros(SHAPE), dtype=np.uint8)
    (tmp_path / 'rawdata' / 'sub-strokecase0001' / 'ses-0001' / 'dwi' / 'sub-strokecase0001_ses-0001_dwi.json').write_text('{}')
    cs = find_cases(tmp_path, modalities='isles')
    assert [c.subject for c in cs] == ['sub-strokecase0001', 'sub-strokecase0002']
    c = cs[0]
    assert c.layout == 'isles2022' and c.modalities == ('dwi', 'adc', 't2f')
    assert c.seg.name == 'sub-strokecase0001_ses-0002_msk.nii.gz'
    assert c.paths['t2f'].parent.name == 'anat'
    # ISLES FLAIR is not on the DWI grid: refused by default, resampled on request, dwi is the reference
    with pytest.raises(ValueError, match='sub-strokecase0001: t2f'):
        load_case(c)
    cv = load_case(c, resample=True)
    assert cv.reference_modality == 'dwi' and cv.data['t2f'].shape == SHAPE
    assert find_cases(tmp_path / 'rawdata')[0].seg is None       # rawdata/ alone works too


def test_isles_derivatives_only_is_an_error(tmp_path):
    write(tmp_path / 'derivatives' / 'sub-strokecase0001' / 'ses-0002' / 'sub-strokecase0001_ses-0002_msk.nii.gz', dtype=np.uint8)
    with pytest.raises(ValueError, match='sub-strokecase0001 has no usable modality'):
        find_cases(tmp_path)


@pytest.mark.parametrize('folders', [False, True])
def test_ixi_both_layouts(tmp_path, folders):
    for i, subj in enumerate(('IXI012-HH-1211', 'IXI002-Guys-0828')):
        for m in ('T1', 'T2', 'PD'):
            write(tmp_path / (f'IXI-{m}' if folders else '') / f'{subj}-{m}.nii.gz', blob(i))
    write(tmp_path / ('IXI-MRA' if folders else '') / 'IXI002-Guys-0828-MRA.nii.gz')
    with pytest.warns(UserWarning, match='MRA'):
        cs = find_cases(tmp_path)
    assert [c.subject for c in cs] == ['IXI002-Guys-0828', 'IXI012-HH-1211']
    assert all(c.layout == 'ixi' and c.modalities == ('t1n', 't2w', 'pd') for c in cs)
    assert cs[0].paths['pd'].name == 'IXI002-Guys-0828-PD.nii.gz'
    assert cs[0].paths['pd'].parent.name == ('IXI-PD' if folders else tmp_path.name)
    assert load_case(cs[0], modalities='ixi').modalities == ('t1n', 't2w', 'pd')


def test_modalities_filter(tmp_path):
    for m in ('t1', 't2', 'flair'): write(tmp_path / 'a' / f'{m}.nii.gz')
    write(tmp_path / 'b' / 'pd.nii.gz')
    with pytest.warns(UserWarning, match='left out'):
        cs = find_cases(tmp_path, modalities=['flair', 't1'])
    assert [(c.subject, c.modalities) for c in cs] == [('a', ('t2f', 't1n'))]
    with pytest.raises(ValueError, match='unknown modality'):
        find_cases(tmp_path, modalities='t1,t9')
    with pytest.raises(ValueError, match='no subject under'):
        find_cases(tmp_path, modalities='adc')


# ---------------------------------------------------------------- writing
def test_save_like_round_trip_lps_and_oblique(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    obl = np.array([[0, -1.1 * s, 2.0 * c, 4], [0, 1.1 * c, 2.0 * s, -3], [-0.9, 0, 0, 7], [0, 0, 0, 1]])
    for aff in (LPS, obl):
        src = write(tmp_path / 'in' / 't1.nii.gz', blob(5), aff)
        cv = load_case(Case.from_paths({'t1': src}, 'rt'))
        out = save_like(cv.data['t1n'] * 2, cv.reference, tmp_path / 'out' / 'deep' / 'x.nii.gz', inputs=cv)
        a, b = nib.load(src), nib.load(out)
        assert b.shape == a.shape and np.array_equal(b.affine, a.affine)
        assert nib.aff2axcodes(b.affine) == nib.aff2axcodes(a.affine)
        np.testing.assert_array_equal(b.get_fdata(dtype=np.float32), a.get_fdata(dtype=np.float32) * 2)
        assert b.get_data_dtype() == np.float32
        src.unlink()


def test_save_like_refuses_input(tmp_path):
    src = write(tmp_path / 'subj01' / 't1.nii.gz')
    before = src.read_bytes()
    cv = load_case(find_cases(tmp_path)[0])
    for inputs in (cv.paths, [src], cv, str(src)):
        with pytest.raises(ValueError, match='refusing to overwrite input file') as e:
            save_like(cv.data['t1n'], cv.reference, src, inputs=inputs)
        assert 't1.nii.gz' in str(e.value)
    # through another spelling of the same path, and through a symlink
    with pytest.raises(ValueError, match='refusing to overwrite'):
        save_like(cv.data['t1n'], cv.reference, tmp_path / 'subj01' / '..' / 'subj01' / 't1.nii.gz', inputs=cv)
    (tmp_path / 'link.nii.gz').symlink_to(src)
    with pytest.raises(ValueError, match='refusing to overwrite'):
        save_like(cv.data['t1n'], cv.reference, tmp_path / 'link.nii.gz', inputs=cv)
    assert src.read_bytes() == before
    check_not_input(tmp_path / 'other.nii.gz', cv)      # a different file is fine


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    src = write(tmp_path / 'in' / 't1.nii.gz')
    cv = load_case(Case.from_paths({'t1': src}))
    out_dir = tmp_path / 'out'; out_dir.mkdir()
    existing = out_dir / 'kept.nii.gz'; existing.write_bytes(b'old content')

    def broken_save(img, path):
        Path(path).write_bytes(b'partial nifti bytes')
        raise OSError('disk full')
    monkeypatch.setattr(mio.nib, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        save_like(cv.data['t1n'], cv.reference, out_dir / 'new.nii.gz')
    with pytest.raises(OSError, match='disk full'):
        save_like(cv.data['t1n'], cv.reference, existing)
    assert sorted(p.name for p in out_dir.iterdir()) == ['kept.nii.gz']
    assert existing.read_bytes() == b'old content'


def test_atomic_path_and_save_nifti(tmp_path):
    p = tmp_path / 'a' / 'b.txt'
    with atomic_path(p) as t:
        assert t.parent == p.parent and t.name.endswith('b.txt') and t.name.startswith('.')
        t.write_text('ok'); assert not p.exists()
    assert p.read_text() == 'ok'
    with pytest.raises(RuntimeError):
        with atomic_path(p) as t:
            t.write_text('half'); raise RuntimeError('boom')
    assert p.read_text() == 'ok' and [q.name for q in p.parent.iterdir()] == ['b.txt']
    assert atomic_write(tmp_path / 'c.txt', lambda t: t.write_text('x')).read_text() == 'x'
    img = nib.Nifti1Image(blob(), LPS)
    out = save_nifti(img, tmp_path / 'img.nii.gz')
    assert out.read_bytes()[:2] == b'\x1f\x8b'                       # compressed: the temp name kept .nii.gz
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), blob())
    with pytest.raises(ValueError, match='must end in .nii'):
        save_nifti(img, tmp_path / 'img.png')
    with pytest.raises(ValueError, match='refusing to overwrite'):
        save_nifti(img, out, inputs=[out])


def test_image_like_checks_shape(tmp_path):
    cv = load_case(Case.from_paths({'t1': write(tmp_path / 't1.nii.gz')}))
    with pytest.raises(ValueError, match='canonical'):
        image_like(np.zeros((3, 3, 3)), cv.reference)
    img = image_like(cv.data['t1n'], cv.reference)
    assert np.isnan(img.header['scl_slope']) or img.header['scl_slope'] in (0, 1)


# ---------------------------------------------------------------- mask and normalisation
def test_mask_and_normalize():
    v = blob(); v[v < 20] = 0
    m = foreground_mask([v, v * 3])
    assert m.dtype == bool and m.shape == SHAPE and m.any() and not m.all()
    x, st = normalize(v, m)
    assert x.dtype == np.float32 and x.min() == 0 and x.max() == 1 and (x[~m] == 0).all()
    assert isinstance(st, NormStats) and st.lo < st.hi
    inside = m & (v > st.lo) & (v < st.hi)
    np.testing.assert_allclose(denormalize(x, st)[inside], v[inside], rtol=1e-5, atol=1e-4)
    x2, st2 = normalize(v)          # mask computed from the volume itself
    assert x2.max() == 1 and st2.hi == pytest.approx(st.hi, rel=0.2)
    with pytest.raises(ValueError, match='empty'):
        normalize(v, np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match='one shape'):
        foreground_mask([v, v[:-1]])
    assert not foreground_mask({'a': np.zeros(SHAPE)}).any()


def test_in_memory_images(tmp_path):
    src = write(tmp_path / 't1.nii.gz', blob())
    cv = load_case({'t1': nib.load(src), 'T2': nib.Nifti1Image(blob(1), LPS)}, modalities='brats')
    assert cv.modalities == ('t1n', 't2w') and cv.subject == 'case'
    np.testing.assert_array_equal(cv.data['t1n'], load_volume(src).get_fdata(dtype=np.float32))
    with pytest.raises(ValueError, match='in-memory Nifti1Image') as e:
        load_case({'t1': nib.load(src), 't2': nib.Nifti1Image(np.zeros(SHAPE, np.float32), LPS)}, )
    assert 'all zero' in str(e.value) and 't2w' in str(e.value)
    moved = LPS.copy(); moved[2, 3] += 3
    with pytest.raises(ValueError, match='resample=True') as e:
        load_case({'t1': src, 't2': nib.Nifti1Image(blob(1), moved)})
    assert 't1.nii.gz' in str(e.value) and 't2w' in str(e.value)
    with pytest.raises(ValueError, match='given twice'):
        Case.from_paths({'t1': src, 't1w': src})
    with pytest.raises(FileNotFoundError, match='gone.nii.gz'):
        Case.from_paths({'t1': tmp_path / 'gone.nii.gz'})


def test_nifti2_and_scaled_int_round_trip(tmp_path):
    v = blob() * 10
    nib.save(nib.Nifti2Image(v, LPS), tmp_path / 'n2.nii.gz')
    i16 = nib.Nifti1Image(v, LPS); i16.header.set_data_dtype(np.int16); nib.save(i16, tmp_path / 'i16.nii')
    for f in ('n2.nii.gz', 'i16.nii'):
        cv = load_case({'t1': tmp_path / f})
        out = save_like(cv.data['t1n'], cv.reference, tmp_path / 'out' / f, inputs=cv)
        a, b = nib.load(tmp_path / f), nib.load(out)
        assert type(b) is type(a) and np.array_equal(b.affine, a.affine) and b.get_data_dtype() == np.float32
        np.testing.assert_array_equal(b.get_fdata(dtype=np.float32), a.get_fdata(dtype=np.float32))
