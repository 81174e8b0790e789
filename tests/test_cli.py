"`med-k2n synth` and the CLI's help end to end, as subprocesses: outputs on the input's grid, and every bad input a one-line error, exit 2, nothing written"
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import contextlib, io, subprocess, sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from med_k2n.cli import COMMANDS, run_command
from med_k2n.registry import save_model
from med_k2n.model import MedK2N

SHAPE = (24, 20, 6)


def head(shape=SHAPE, scale=1.0, seed=0):
    "An ellipsoid 'head' with a brighter core and a little noise"
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, k) for k in shape], indexing='ij'))
    r = np.sqrt((g[0] / .8) ** 2 + (g[1] / .8) ** 2 + (g[2] / .95) ** 2)
    v = np.where(r < 1, 100 * scale * (1 + (r < .5)), 0) + np.random.default_rng(seed).random(shape)
    return v.astype(np.float32)


def lps_affine(shape=SHAPE):
    a = np.diag([-1.2, -1.0, 2.0, 1.])
    a[:3, 3] = [10, 12, -5]
    return a


def write(path, data, affine=None):
    img = nib.Nifti1Image(data, lps_affine(data.shape[:3]) if affine is None else affine)
    img.header['descrip'] = b'med_k2n cli test'
    nib.save(img, path)
    return path


def run(*args):
    return subprocess.Popen(['med-k2n', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'Agg'})


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    "Tiny inputs, a tiny untrained BraTS model and an IXI model on disk; every subprocess started at once (2 cores)"
    d = tmp_path_factory.mktemp('cli')
    torch.manual_seed(0)
    save_model(MedK2N.from_preset('cpu', size=32), d / 'model')
    save_model(MedK2N.from_preset('cpu', modalities='ixi', size=32), d / 'ixi')
    f = {m: write(d / f'sub_{m}.nii.gz', head(scale=1 + i / 3, seed=i)) for i, m in enumerate(('t1n', 't2f'))}
    (d / 'bad.nii.gz').write_bytes(b'\x1f\x8b this is not a NIfTI file at all')
    write(d / 'four.nii.gz', np.stack([head()] * 3, -1))
    write(d / 'other_grid.nii.gz', head((22, 20, 6)))
    clash = d / 'clash'; clash.mkdir()
    write(clash / 's_t1n.nii.gz', head()); write(clash / 's_t1c.nii.gz', head(seed=3))
    M = ('--model', d / 'model')
    good = ('--input', f"t1n={f['t1n']}", '--input', f"t2f={f['t2f']}")
    cases = {
        'unknown_modality': (M + ('--input', f"t1x={f['t1n']}", '--target', 't1c'), "unknown modality 't1x'"),
        'target_is_input': (M + good + ('--target', 't1n'), 't1n is both an input and a target'),
        'missing_file': (M + ('--input', f"t1n={d / 'nope.nii.gz'}", '--target', 't1c'), 'file not found'),
        'unreadable_file': (M + ('--input', f"t1n={d / 'bad.nii.gz'}", '--target', 't1c'), 'cannot read'),
        'four_d': (M + ('--input', f"t1n={d / 'four.nii.gz'}", '--target', 't1c'), '4-D'),
        'grid_mismatch': (M + ('--input', f"t1n={f['t1n']}", '--input', f"t2f={d / 'other_grid.nii.gz'}", '--target', 't1c'), '--resample'),
        'other_modality_set': (('--model', d / 'ixi') + good + ('--target', 't2w'), 'cannot take t2f as input'),
        'overwrite_input': (M + ('--input', f"t1n={clash / 's_t1n.nii.gz'}", '--input', f"t2f={clash / 's_t1c.nii.gz'}", '--target', 't1c'),
                            'refusing to overwrite input file'),
        'no_model': (good + ('--target', 't1c'), 'give the trained model folder with --model DIR'),
        'no_target': (M + good, '--all-missing'),
    }
    procs = {}
    for k, (args, _) in cases.items():
        out = clash if k == 'overwrite_input' else d / f'out_{k}'
        procs[k] = (run('synth', *args, '--out', out), out)
    procs['good'] = (run('synth', *M, *good, '--all-missing', '--out', d / 'out_good', '--bs', 4), d / 'out_good')
    procs['help'] = (run('--help'), None)
    res = {k: (*p.communicate(timeout=600), p.returncode, out) for k, (p, out) in procs.items()}
    return dict(dir=d, files=f, res=res, expect={k: v[1] for k, v in cases.items()}, clash_before=sorted(os.listdir(clash)))


BAD = ['unknown_modality', 'target_is_input', 'missing_file', 'unreadable_file', 'four_d', 'grid_mismatch',
       'other_modality_set', 'overwrite_input', 'no_model', 'no_target']


@pytest.mark.parametrize('case', BAD)
def test_bad_input(env, case):
    stdout, stderr, rc, out = env['res'][case]
    assert rc == 2, (case, rc, stderr)
    lines = [o for o in stderr.splitlines() if o.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith('med-k2n synth: error: '), lines[0]
    assert env['expect'][case] in lines[0], lines[0]
    assert 'Traceback' not in stderr + stdout
    if case == 'overwrite_input': assert sorted(os.listdir(out)) == env['clash_before']
    else: assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_synth_outputs_match_input(env):
    stdout, stderr, rc, out = env['res']['good']
    assert rc == 0, stderr
    assert 'Traceback' not in stderr and 'torch.jit.script' not in stderr
    ref = nib.load(env['files']['t1n'])
    names = sorted(p.name for p in out.iterdir())
    assert names == ['sub_synth.json', 'sub_t1c.nii.gz', 'sub_t1c_quality.nii.gz', 'sub_t2w.nii.gz', 'sub_t2w_quality.nii.gz']
    for n in names[1:]:
        img = nib.load(out / n)
        assert img.shape == ref.shape
        np.testing.assert_array_equal(img.affine, ref.affine)
        assert img.header['descrip'] == ref.header['descrip']
        assert img.header.get_zooms() == ref.header.get_zooms()
        assert img.get_data_dtype() == np.float32
        a = img.get_fdata()
        assert np.isfinite(a).all() and a.min() >= 0 and a.max() > 0
    assert 'sub_t1c.nii.gz' in stdout and 'fusion weights' in stdout


def test_main_help(env):
    stdout, stderr, rc, _ = env['res']['help']
    assert rc == 0
    for k in ('synth', 'demo', 'train', 'phantom'): assert f'  {k} ' in stdout


@pytest.mark.parametrize('name', ['synth', 'demo'])
def test_subcommand_help_lists_every_option_with_default(name):
    from fastcore.script import anno_parser
    from med_k2n.cli import command
    if name not in COMMANDS: pytest.skip(f'{name} is not registered')
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e: run_command(name, ['--help'])
    assert e.value.code == 0
    text = ' '.join(buf.getvalue().split())
    p = anno_parser(command(name))
    for a in p._actions:
        if a.help == '==SUPPRESS==' or a.dest == 'help': continue
        assert a.option_strings[-1] in text, a.option_strings
        h = ' '.join(a.help.split())
        assert h in text
        assert 'default' in h or 'required' in h, (a.dest, h)
