"`med-k2n train` end to end on a tiny phantom: checkpoint files, resume, and user errors"
import os, json, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '2'}

def med_k2n(*args, **kw):
    return subprocess.run([sys.executable, '-c', 'import sys; from med_k2n.cli import main; sys.exit(main())', *args],
                          capture_output=True, text=True, env=ENV, **kw)

@pytest.fixture(scope='module')
def phantom(tmp_path_factory):
    from med_k2n.phantom import write_phantom_dataset
    d = tmp_path_factory.mktemp('pha')
    write_phantom_dataset(d, subjects=4, size=32, seed=1, progress=False)
    return d

def test_train_writes_checkpoint_and_resumes(phantom, tmp_path):
    out = tmp_path/'run'
    r = med_k2n('train', '--data', str(phantom), '--out', str(out), '--size', '32', '--epochs', '1', '--bs', '4', '--arch', 'unet')
    assert r.returncode == 0, r.stderr
    assert 'slices/s' in r.stdout
    meta = json.loads((out/'model.json').read_text())
    assert meta['arch'] == 'unet' and meta['epoch'] == 0 and meta['size'] == 32
    assert meta['modalities'] == ['t1n', 't1c', 't2w', 't2f'] and Path(meta['cache']).exists()
    assert (out/'model.safetensors').stat().st_size > 0 and (out/'history.csv').exists()
    r = med_k2n('train', '--data', str(phantom), '--out', str(out), '--size', '32', '--epochs', '2', '--bs', '4',
                '--arch', 'unet', '--resume', str(out))
    assert r.returncode == 0, r.stderr
    meta = json.loads((out/'model.json').read_text())
    assert meta['epoch'] == 1 and meta['train']['resumed_from'] == str(out)
    assert len((out/'history.csv').read_text().strip().splitlines()) == 3   # header + 2 epochs

def test_train_medk2n_one_epoch(phantom, tmp_path):
    from med_k2n.registry import load_model
    r = med_k2n('train', '--data', str(phantom), '--out', str(tmp_path/'m'), '--size', '32', '--epochs', '1', '--bs', '4', '--corrupt', '0.5')
    assert r.returncode == 0, r.stderr
    m = load_model(tmp_path/'m')
    assert type(m).__name__ == 'MedK2N' and m.size == 32
    assert m.meta['train']['corrupt'] == 0.5

@pytest.mark.parametrize('args, msg', [
    ([], 'give the dataset with --data'),
    (['--ablation', 'B9'], 'unknown ablation'),
    (['--preset', 'huge'], 'unknown preset'),
    (['--corrupt', '2'], 'must be in [0, 1]'),
])
def test_train_user_errors(phantom, tmp_path, args, msg):
    base = [] if not args else ['--data', str(phantom), '--out', str(tmp_path/'x'), '--size', '32', '--epochs', '1']
    r = med_k2n('train', *base, *args)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('med-k2n train: error:') and msg in err[0], r.stderr
    assert 'Traceback' not in r.stderr
    assert not (tmp_path/'x'/'model.safetensors').exists()

def test_train_empty_folder(tmp_path):
    (tmp_path/'empty').mkdir()
    r = med_k2n('train', '--data', str(tmp_path/'empty'), '--out', str(tmp_path/'o'))
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1
