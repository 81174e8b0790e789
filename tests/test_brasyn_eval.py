"""`med-k2n eval --protocol brasyn` end to end: a Med-K2N, a U-Net baseline and a tumour segmenter trained one
epoch each on a tiny phantom, a held-out phantom cohort completed and scored; the printed tables, the CSVs (one
row per subject and model), the Dice of the real / completed / zero-filled sets, the balance of the dropped
sequences, an external segmenter command, broken subjects and user errors"""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import shlex, shutil, sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from med_k2n import io as kio
from med_k2n.brasyn import drop_one_modality, region_dice
from med_k2n.brasyn_eval import evaluate_brasyn
from cli_runner import cli
from med_k2n.data import SliceCache
from med_k2n.segment import load_segmenter, segment_volume

SETS = ['real', 'medk2n', 'unet', 'zero-filled']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "Phantoms `train` (6 subjects) and `held` (8 subjects, another seed) at 32 px, every subject with gliomas; two synthesis models and a segmenter trained one epoch on `train`"
    import torch
    from med_k2n.phantom import write_phantom_dataset
    from med_k2n.learner import train
    from med_k2n.segment import train_seg
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('brasyn_eval')
    write_phantom_dataset(d / 'train', subjects=6, size=32, seed=0, progress=False, lesion=True)
    write_phantom_dataset(d / 'held', subjects=8, size=32, seed=1, progress=False, lesion=True)
    train(d / 'train', d / 'medk2n', size=32, epochs=1, bs=8, progress=False)
    train(d / 'train', d / 'unet', arch='unet', size=32, epochs=1, bs=8, progress=False)
    train_seg(d / 'train', d / 'seg', epochs=1, bs=8, size=32, base=4, progress=False)
    return d


@pytest.fixture(scope='module')
def evaluated(trained):
    "The CLI run on the held-out cohort: Med-K2N, the U-Net baseline, the segmenter"
    d = trained
    res = cli('eval', '--protocol', 'brasyn', '--model', d / 'medk2n', '--baseline', d / 'unet', '--segmenter', d / 'seg',
              '--data', d / 'held', '--split', 'all', '--out', d / 'ev', '--bs', 32, '--no-progress')
    return d, res


def test_tables_printed_and_files_written(evaluated):
    d, (rc, out, err) = evaluated
    assert rc == 0, err
    assert '| Missing | Model | n | SSIM tumour | SSIM healthy | PSNR (dB) | MSE |' in out
    assert '| Input set | n | Dice ET | Dice TC | Dice WT |' in out
    assert '| all | medk2n | 8 |' in out and '| all | unet | 8 |' in out
    for s in ('| all real | 8 |', '| medk2n (synthesised) | 8 |', '| unet (synthesised) | 8 |', '| zero-filled | 8 |'): assert s in out
    assert sorted(p.name for p in (d / 'ev').iterdir()) == ['brasyn_dice.csv', 'brasyn_report.md', 'brasyn_results.csv', 'medk2n', 'unet']
    rep = (d / 'ev' / 'brasyn_report.md').read_text()
    assert '## Synthesis of the missing sequence' in rep and '## Tumour segmentation of the completed sets' in rep
    assert '## Paired tests: medk2n against the others' in rep and '| medk2n | unet | SSIM tumour | 8 |' in rep
    assert '| medk2n | zero-filled | Dice WT | 8 |' in rep and 'Subjects not scored' not in rep


def test_one_row_per_subject_and_model(evaluated):
    d, _ = evaluated
    res = pd.read_csv(d / 'ev' / 'brasyn_results.csv')
    held = [c.subject for c in kio.find_cases(d / 'held')]
    assert len(res) == 8 * 2 and res.groupby(['subject', 'model']).size().max() == 1
    assert sorted(res.subject.unique()) == held and sorted(res.model.unique()) == ['medk2n', 'unet']
    assert res[['ssim_tumour', 'ssim_healthy', 'psnr', 'mse']].notna().all().all()   # every subject has a tumour here
    assert ((res.ssim_healthy > -1) & (res.ssim_healthy <= 1) & (res.mse >= 0)).all()
    cases = {c.subject: c for c in kio.find_cases(d / 'held')}
    for r in res.itertuples():
        f = d / 'ev' / r.file
        assert f.name == f'{r.subject}-{r.missing}.nii.gz' and f.parent.name == r.model
        syn, real = nib.load(f), nib.load(cases[r.subject].paths[r.missing])
        assert syn.shape == real.shape and np.allclose(syn.affine, real.affine)


def test_dropped_modality_balanced(evaluated):
    d, _ = evaluated
    res = pd.read_csv(d / 'ev' / 'brasyn_results.csv')
    per = res.groupby('subject').missing.agg(lambda m: set(m))
    assert all(len(m) == 1 for m in per)                      # the same sequence for every model
    drop = {s: next(iter(m)) for s, m in per.items()}
    assert drop == drop_one_modality(list(drop), seed=0)
    assert sorted(pd.Series(drop).value_counts().items()) == [('t1c', 2), ('t1n', 2), ('t2f', 2), ('t2w', 2)]
    assert all(r.missing not in r.inputs.split(',') and len(r.inputs.split(',')) == 3 for r in res.itertuples())


def test_dice_real_models_zero_filled(evaluated):
    d, _ = evaluated
    dice = pd.read_csv(d / 'ev' / 'brasyn_dice.csv')
    assert len(dice) == 8 * 4
    for s, g in dice.groupby('subject'):
        assert list(g.set) == SETS and list(g.kind) == ['real', 'synthesised', 'synthesised', 'zero-filled']
        assert g.missing.nunique() == 1
    assert ((dice[['ET', 'TC', 'WT']] >= 0) & (dice[['ET', 'TC', 'WT']] <= 1)).all().all()
    s = dice.subject.iloc[0]
    v = kio.load_case(next(c for c in kio.find_cases(d / 'held') if c.subject == s))
    direct = region_dice(segment_volume(load_segmenter(d / 'seg'), v.data, bs=32), v.seg)
    row = dice[(dice.subject == s) & (dice.set == 'real')].iloc[0]
    assert direct == pytest.approx({k: row[k] for k in ('ET', 'TC', 'WT')}, abs=1e-4)


PROG = ("import sys, pathlib, nibabel as nib, numpy as np\n"
        "i, o = map(pathlib.Path, sys.argv[1:])\n"
        "for f in i.glob('*-t2f.nii.gz'):\n"
        "    img = nib.load(f); v = img.get_fdata()\n"
        "    lab = np.where(v > v[v > 0].mean(), 2, 0) if v.any() else np.zeros(v.shape)\n"
        "    nib.save(nib.Nifti1Image(lab.astype(np.uint8), img.affine), o / f.name.replace('-t2f', ''))")


def test_segmenter_cmd(trained):
    d = trained
    cmd = f'{shlex.quote(sys.executable)} -c {shlex.quote(PROG)} {{in}} {{out}}'
    rc, out, err = cli('eval', '--protocol', 'brasyn', '--model', d / 'medk2n', '--segmenter-cmd', cmd, '--data', d / 'held',
                       '--split', 'all', '--out', d / 'ev_cmd', '--bs', 32, '--no-progress')
    assert rc == 0, err
    assert '| medk2n (synthesised) | 8 |' in out and '| zero-filled | 8 |' in out
    dice = pd.read_csv(d / 'ev_cmd' / 'brasyn_dice.csv')
    assert len(dice) == 8 * 3 and all(list(g.set) == ['real', 'medk2n', 'zero-filled'] for _, g in dice.groupby('subject'))
    for c in kio.find_cases(d / 'held')[:2]:
        v = kio.load_case(c)
        t2f = v.data['t2f']
        row = dice[(dice.subject == c.subject) & (dice.set == 'real')].iloc[0]
        want = region_dice(np.where(t2f > t2f[t2f > 0].mean(), 2, 0), v.seg)
        assert want == pytest.approx({k: row[k] for k in ('ET', 'TC', 'WT')}, abs=1e-4)
    zf = dice[(dice.set == 'zero-filled') & (dice.missing == 't2f')]
    assert len(zf) == 2 and (zf.WT == 0).all()                # nothing found without the T2f
    assert not [p for p in (d / 'ev_cmd').iterdir() if p.name.startswith('.')]   # the command's folders are gone


def test_default_is_the_models_test_split(trained, tmp_path):
    d = trained
    ev = evaluate_brasyn({'medk2n': d / 'medk2n'}, out=tmp_path / 'ev', bs=32, progress=False)
    cache = SliceCache.open(d / 'train' / '.med_k2n_cache')
    assert sorted(ev.results.subject) == cache.splits['test'] and ev.dataset.resolve() == (d / 'train').resolve()
    assert len(ev.dice) == 0 and not (tmp_path / 'ev' / 'brasyn_dice.csv').exists()
    assert 'Tumour segmentation' not in ev.report


def test_broken_subjects_reported_rest_scored(trained, tmp_path):
    d = trained
    data = tmp_path / 'held'
    shutil.copytree(d / 'held', data, ignore=shutil.ignore_patterns('.med_k2n_cache'))
    a, b = sorted(p.name for p in data.iterdir())[:2]
    (data / a / f'{a}-t1n.nii.gz').write_bytes(b'\x00' * 100)
    shutil.copy(data / b / f'{b}-seg.nii.gz', data / b / f'{b}-t2w.nii.gz')
    rc, out, err = cli('eval', '--protocol', 'brasyn', '--model', d / 'medk2n', '--data', data, '--split', 'all',
                       '--out', tmp_path / 'ev', '--bs', 32, '--no-progress')
    assert rc == 1, err
    assert '2 subject(s) failed:' in out
    lines = out.splitlines()
    la, lb = (next(l for l in lines if l.startswith(f'  {s}: ')) for s in (a, b))
    assert 'cannot read as a NIfTI' in la and 't1n' in la
    assert 'looks like a segmentation' in lb and 't2w' in lb
    res = pd.read_csv(tmp_path / 'ev' / 'brasyn_results.csv')
    assert res.subject.nunique() == 6 and not {a, b} & set(res.subject)
    assert not list((tmp_path / 'ev' / 'medk2n').glob(f'{a}-*')) and not list((tmp_path / 'ev' / 'medk2n').glob(f'{b}-*'))
    assert f'- {a}: ' in (tmp_path / 'ev' / 'brasyn_report.md').read_text()


@pytest.mark.parametrize('args, msg', [
    (['--protocol', 'bogus'], "--protocol 'bogus'"),
    (['--segmenter', '{seg}'], 'add --protocol brasyn'),
    (['--protocol', 'brasyn', '--segmenter', '{seg}', '--segmenter-cmd', 'x {in} {out}'], 'not both'),
    (['--protocol', 'brasyn', '--vlm', '{seg}'], '--vlm belongs to --protocol table1'),
    (['--protocol', 'brasyn', '--segmenter', '{d}/nowhere'], 'train-seg'),
    (['--protocol', 'brasyn', '--segmenter', '{d}/unet'], 'not a med_k2n tumour segmenter'),
    (['--protocol', 'brasyn', '--segmenter-cmd', 'seg {in}'], 'placeholders'),
    (['--protocol', 'brasyn', '--split', 'train'], 'trained on'),
    (['--protocol', 'brasyn', '--data', '{d}/held', '--split', 'all', '--out', '{d}/held/ev'], 'inside the data folder'),
])
def test_user_errors(trained, tmp_path, args, msg):
    d = trained
    args = [a.format(d=d, seg=d / 'seg') if '{d}' in a or '{seg}' in a else a for a in args]
    out = [] if '--out' in args else ['--out', tmp_path / 'ev']
    rc, so, err = cli('eval', '--model', d / 'medk2n', *out, '--no-progress', *args)
    assert rc == 2, (so, err)
    assert err.startswith('med-k2n eval: error:') and err.count('\n') == 1 and msg in err, err
    assert not (tmp_path / 'ev').exists() and not (d / 'held' / 'ev').exists()
