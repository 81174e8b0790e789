"""A cohort split over processes (issue 40): `med-k2n synth --data` under torchrun with two CPU processes (gloo)
writes every subject exactly once, the same images as one process; a broken subject is reported once, by the rank
that met it; a run whose rank was killed mid-run is completed by the next run, with another number of processes;
`med-k2n eval --protocol brasyn` under torchrun gives the table of one process."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import json, re, signal, subprocess, sys, time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from cli_runner import cli
from med_k2n.learner import save_model
from med_k2n.model import MedK2N
from med_k2n.phantom import write_phantom_dataset

ENV = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
MS = ('t1n', 't1c', 't2w', 't2f')
N, BROKEN = 6, 'BraTS-PHA-00003-000'


def torchrun_cmd(*args, nproc=2) -> list:
    "`python -m med_k2n ARGS` on `nproc` local processes started by torchrun (a free port via --standalone)"
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc), '--no-python',
            sys.executable, '-m', 'med_k2n', *map(str, args)]


def rows(out:Path) -> list:
    return json.loads((out/'synth_summary.json').read_text())['subjects']


def volumes(out:Path) -> dict:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob('*.nii.gz'))}


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    "A phantom cohort at 64 px, 8 slices, one sequence missing per subject, one subject with an unreadable file; an untrained 32-px model"
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp('dist_cohort')
    data = d/'data'
    write_phantom_dataset(data, subjects=N, size=64, depth=8, progress=False, lesion=True)
    rng = np.random.default_rng(40)
    for s in sorted(data.iterdir()): (s/f'{s.name}-{MS[rng.integers(len(MS))]}.nii.gz').unlink()
    broken = sorted((data/BROKEN).glob('*-t*.nii.gz'))[0]
    broken.write_bytes(b'\x1f\x8b\x08\x00' + bytes(range(256)) * 4)   # a gzip header, then garbage
    torch.manual_seed(0)
    save_model(MedK2N.from_preset('cpu', size=32), d/'model')
    return d, data, broken


@pytest.fixture(scope='module')
def two_ranks(cohort):
    "The same command on one process (in this one) and on two processes (torchrun)"
    d, data, _ = cohort
    cmd = ('synth', '--data', data, '--model', d/'model', '--bs', 4)
    one = cli(*cmd, '--out', d/'one')
    two = subprocess.run(torchrun_cmd(*cmd, '--out', d/'two'), capture_output=True, text=True, env=ENV, timeout=300)
    return d, one, two


def test_two_ranks_write_every_subject_once_as_one_process(two_ranks):
    d, one, two = two_ranks
    assert one[0] == 1 and two.returncode != 0, two.stdout[-3000:] + two.stderr[-3000:]   # the broken subject fails the run
    r1, r2 = rows(d/'one'), rows(d/'two')
    good = sorted(r['subject'] for r in r1 if r['status'] == 'done')
    assert len(good) == N - 1 and BROKEN not in good
    # one row per subject gathered from both ranks: a subject done by both would have two
    assert sorted(r['subject'] for r in r2) == sorted(r['subject'] for r in r1) and len(r2) == N
    assert sorted(r['subject'] for r in r2 if r['status'] == 'done') == good
    assert {r['rank'] for r in r2 if r['status'] == 'done'} == {0, 1}, 'both ranks take a share'
    assert all(r['model_s'] > 0 and r['write_s'] > 0 and r['read_s'] > 0 for r in r2 if r['status'] == 'done')
    v1, v2 = volumes(d/'one'), volumes(d/'two')
    assert sorted(v1) == sorted(v2) and len(v1) == 2 * (N - 1)   # each target and its quality map
    for k in v1: np.testing.assert_allclose(v2[k], v1[k], atol=1e-5, err_msg=k)
    assert not list((d/'two').glob('.tmp-*'))
    # one report, from rank 0
    assert two.stdout.count('5 done, 0 skipped (already complete), 1 failed') == 1, two.stdout
    assert 'on 2 processes' in two.stdout and 'Traceback' not in one[1] + one[2]
    assert not re.search(r'File ".*med_k2n', two.stderr), two.stderr[-3000:]   # torchrun's own report of a non-zero exit is a traceback


def test_broken_subject_reported_once_by_its_rank(two_ranks, cohort):
    d, one, two = two_ranks
    broken = cohort[2]
    row = next(r for r in rows(d/'two') if r['subject'] == BROKEN)
    assert row['status'] == 'failed' and broken.name in row['reason'] and 'cannot read' in row['reason']
    lines = re.findall(rf'^\[rank (\d)\] {BROKEN}: failed: .*$', two.stderr, re.M)
    assert lines == [str(row['rank'])], two.stderr[-3000:]
    assert two.stderr.count(f'{BROKEN}: failed') == 1
    assert two.stdout.count(f'{BROKEN}: ') == 1   # listed once in rank 0's report


def test_resume_after_a_rank_is_killed(cohort, tmp_path):
    "Rank 1 killed after the first subject is written; one process then completes the rest, skipping what is complete"
    d, data, _ = cohort
    out = tmp_path/'out'
    cmd = ('synth', '--data', data, '--model', d/'model', '--out', out, '--bs', 1, '--workers', 0)
    p = subprocess.Popen(torchrun_cmd(*cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        t0 = time.time()
        while not list(out.glob('*_synth.json')):
            assert p.poll() is None and time.time() - t0 < 240, 'the run ended (or hung) before writing a subject'
            time.sleep(0.02)
        workers = psutil.Process(p.pid).children()
        assert len(workers) == 2
        rank1 = next(w for w in workers if w.environ().get('RANK') == '1')
        rank1.send_signal(signal.SIGKILL)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill(); p.communicate()
    assert p.returncode != 0
    assert not (out/'synth_summary.json').exists(), 'a killed run has no summary'
    before = {f.name: f.stat().st_mtime_ns for f in out.glob('*_synth.json')}
    assert 1 <= len(before) < N - 1, f'the kill came too late to test a resume ({len(before)} subjects written)'
    rc, so, se = cli(*cmd)   # one process now: another world size
    assert rc == 1 and BROKEN in se
    r = {x['subject']: x['status'] for x in rows(out)}
    assert sorted(s for s, st in r.items() if st == 'skipped') == sorted(f[:-len('_synth.json')] for f in before)
    assert sum(st == 'done' for st in r.values()) == N - 1 - len(before) and r[BROKEN] == 'failed'
    assert {f.name: f.stat().st_mtime_ns for f in out.glob('*_synth.json') if f.name in before} == before, 'complete subjects redone'
    assert len(list(out.glob('*_synth.json'))) == N - 1 and not list(out.glob('.tmp-*'))


def test_brasyn_eval_on_two_ranks_as_one_process(cohort):
    "`med-k2n eval --protocol brasyn` under torchrun: the subjects split over two ranks, one table on rank 0, the scores of one process"
    d = cohort[0]
    held = d/'held'
    write_phantom_dataset(held, subjects=5, size=32, depth=16, seed=1, progress=False, lesion=True)
    cmd = ('eval', '--protocol', 'brasyn', '--model', d/'model', '--data', held, '--split', 'all', '--bs', 8, '--no-progress')
    rc, so, se = cli(*cmd, '--out', d/'ev1')
    assert rc == 0, se
    two = subprocess.run(torchrun_cmd(*cmd, '--out', d/'ev2'), capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count('BraSyn: 5 of 5 subjects scored') == 1, two.stdout
    r1, r2 = (pd.read_csv(d/e/'brasyn_results.csv') for e in ('ev1', 'ev2'))
    assert len(r2) == 5 and list(r2.subject) == list(r1.subject) and list(r2.file) == list(r1.file)
    for k in ('ssim_tumour', 'ssim_healthy', 'psnr', 'mse'): np.testing.assert_allclose(r2[k], r1[k], rtol=1e-4, err_msg=k)
    assert (d/'ev2'/'brasyn_report.md').read_text().split('## Synthesis')[1] == (d/'ev1'/'brasyn_report.md').read_text().split('## Synthesis')[1]
    assert sorted(p.name for p in (d/'ev2'/'model').iterdir()) == sorted(p.name for p in (d/'ev1'/'model').iterdir())


def test_one_process_commands_refused_under_a_launcher(cohort, monkeypatch, tmp_path):
    "Under torchrun, one subject (synth --input/--case) and the slice protocol (eval --protocol table1) refuse to run N times over"
    d, data, _ = cohort
    monkeypatch.setenv('WORLD_SIZE', '2')
    sub = sorted(p for p in data.iterdir() if p.name != BROKEN)[0]
    rc, so, se = cli('synth', '--model', d/'model', '--case', sub, '--all-missing', '--out', tmp_path/'one')
    assert rc == 2 and 'one subject is synthesised by one process' in se and '--data' in se, se
    rc, so, se = cli('eval', '--model', d/'model', '--data', data, '--out', tmp_path/'ev')
    assert rc == 2 and '--protocol table1 runs in one process' in se, se
    assert not (tmp_path/'one').exists() and not (tmp_path/'ev').exists()
