"The tumour segmenter end to end: `med-k2n train-seg` on a tiny phantom, the checkpoint (safetensors + JSON), segmenting a volume, bad inputs as one-line errors with exit code 2, and external segmenter commands"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import json, shlex, shutil, sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from med_k2n import io as kio
from cli_runner import cli
from med_k2n.segment import load_segmenter, read_labels, run_segmenter_cmd, segment_volume


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A 4-subject phantom at 32 px (every subject with gliomas) and a segmenter trained on it for one epoch by the CLI"
    from med_k2n.phantom import write_phantom_dataset
    d = tmp_path_factory.mktemp('seg')
    write_phantom_dataset(d / 'data', subjects=4, size=32, seed=0, progress=False, lesion=True)
    res = cli('train-seg', '--data', d / 'data', '--out', d / 'model', '--epochs', 1, '--bs', 8, '--size', 32, '--base', 4)
    return d, res


def test_train_seg_cli_writes_checkpoint(trained):
    d, (rc, out, err) = trained
    assert rc == 0, err
    assert 'trained the segmenter' in out and 'valid Dice' in out
    assert sorted(p.name for p in (d / 'model').iterdir()) == ['model.json', 'model.safetensors']
    meta = json.loads((d / 'model' / 'model.json').read_text())
    assert meta['format'] == 'med_k2n-segmenter' and meta['size'] == 32 and meta['modalities'] == ['t1n', 't1c', 't2w', 't2f']
    assert len(meta['train']['train_subjects']) == 2 and len(meta['history']) == 1
    test_subjects = json.loads((d / 'data' / '.med_k2n_cache' / 'splits.json').read_text())['test']
    assert not set(test_subjects) & set(meta['train']['train_subjects'] + meta['train']['valid_subjects'])
    from safetensors import safe_open     # plain tensors, no pickle
    with safe_open(str(d / 'model' / 'model.safetensors'), 'pt') as f: assert any(k.startswith('downs.') for k in f.keys())


def test_load_and_segment_a_volume(trained):
    d, _ = trained
    model = load_segmenter(d / 'model')
    case = kio.find_cases(d / 'data')[-1]
    v = kio.load_case(case)
    lab = segment_volume(model, v.data)
    assert lab.shape == v.shape and lab.dtype == np.uint8
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(segment_volume(model, np.stack([v.data[m] for m in model.modalities]), bs=3), lab)
    with pytest.raises(ValueError, match='missing t1c'): segment_volume(model, {m: x for m, x in v.data.items() if m != 't1c'})


def test_train_seg_missing_data_folder(tmp_path):
    rc, out, err = cli('train-seg', '--data', tmp_path / 'nowhere', '--out', tmp_path / 'm')
    assert rc == 2
    assert err.count('\n') == 1 and err.startswith('med-k2n train-seg: error:') and 'nowhere' in err
    assert 'Traceback' not in err and not (tmp_path / 'm').exists()
    rc, _, err = cli('train-seg', '--out', tmp_path / 'm')
    assert rc == 2 and '--data DIR' in err


def test_train_seg_without_labels(trained, tmp_path):
    d, _ = trained
    src = kio.find_cases(d / 'data')[0]
    dst = tmp_path / 'nolabels' / src.subject
    dst.mkdir(parents=True)
    for p in src.paths.values(): shutil.copy(p, dst / p.name)
    rc, _, err = cli('train-seg', '--data', tmp_path / 'nolabels', '--out', tmp_path / 'm')
    assert rc == 2 and 'no segmentation file' in err and err.count('\n') == 1


def inputs_folder(trained, path):
    d, _ = trained
    path.mkdir()
    cases = kio.find_cases(d / 'data')[:2]
    for c in cases:
        for m, p in c.paths.items(): shutil.copy(p, path / f'{c.subject}-{m}.nii.gz')
    return cases


PROG = ("import sys, pathlib, nibabel as nib, numpy as np\n"
        "i, o = map(pathlib.Path, sys.argv[1:])\n"
        "for f in i.glob('*-t2f.nii.gz'):\n"
        "    img = nib.load(f); v = img.get_fdata()\n"
        "    lab = np.where(v > v[v > 0].mean(), 4, 0).astype(np.uint8)\n"   # BraTS 2021's ET label: read back as 3
        "    nib.save(nib.Nifti1Image(lab, img.affine), o / f.name.replace('-t2f', ''))")


def test_run_segmenter_cmd_roundtrip(trained, tmp_path):
    cases = inputs_folder(trained, tmp_path / 'in')
    res = run_segmenter_cmd(f'{shlex.quote(sys.executable)} -c {shlex.quote(PROG)} {{in}} {{out}}', tmp_path / 'in', tmp_path / 'out dir')
    assert sorted(res) == [c.subject for c in cases]
    for c in cases:
        v = kio.load_case(c).data['t2f']
        np.testing.assert_array_equal(res[c.subject], np.where(v > v[v > 0].mean(), 3, 0))
        np.testing.assert_array_equal(read_labels(tmp_path / 'out dir' / f'{c.subject}.nii.gz'), res[c.subject])


def test_run_segmenter_cmd_failures(trained, tmp_path):
    inputs_folder(trained, tmp_path / 'in')
    py = shlex.quote(sys.executable)
    with pytest.raises(RuntimeError, match=r'exit code 3[\s\S]*no weights here'):
        run_segmenter_cmd(f"{py} -c 'import sys; print(\"no weights here\", file=sys.stderr); sys.exit(3)' {{in}} {{out}}", tmp_path / 'in', tmp_path / 'o1')
    with pytest.raises(FileNotFoundError, match='wrote no label file'):
        run_segmenter_cmd(f'{py} -c pass {{in}} {{out}}', tmp_path / 'in', tmp_path / 'o2')
    with pytest.raises(FileNotFoundError, match='program not found'):
        run_segmenter_cmd('/nonexistent/segmenter {in} {out}', tmp_path / 'in', tmp_path / 'o3')
    with pytest.raises(ValueError, match='placeholders'):
        run_segmenter_cmd(f'{py} -c pass {{in}}', tmp_path / 'in', tmp_path / 'o4')
    bad = ("import sys, pathlib, nibabel as nib, numpy as np\n"
           "i, o = map(pathlib.Path, sys.argv[1:])\n"
           "for f in i.glob('*-t1n.nii.gz'): nib.save(nib.Nifti1Image(np.full((3, 3, 3), 7, np.uint8), np.eye(4)), o / f.name.replace('-t1n', ''))")
    with pytest.raises(ValueError, match=r'labels \[7\]'):
        run_segmenter_cmd(f'{py} -c {shlex.quote(bad)} {{in}} {{out}}', tmp_path / 'in', tmp_path / 'o5')
