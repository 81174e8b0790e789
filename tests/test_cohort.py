"""Whole-cohort synthesis, issue 35's acceptance: one `med-k2n synth --data` call on a 10-subject phantom cohort
(one random sequence removed per subject, one subject broken) writes the nine good subjects in the BraSyn layout on
their inputs' grid, reports the broken one and exits non-zero; a second call redoes nothing; a half-written subject is
redone; an output folder inside the input folder is refused; no output is ever an input."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import csv, json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import med_k2n.io as kio
from cli_runner import cli
from med_k2n.learner import save_model
from med_k2n.model import MedK2N
from med_k2n.phantom import write_phantom_dataset

N, BROKEN, MS = 10, 'BraTS-PHA-00006-000', ('t1n', 't1c', 't2w', 't2f')


def synth(*args):
    "`med-k2n synth ARGS` in this process: (exit code, stdout, stderr)"
    return cli('synth', *args)


def files(d:Path) -> dict:
    "{relative path: mtime in ns} of every file under `d`"
    return {p.relative_to(d): p.stat().st_mtime_ns for p in sorted(d.rglob('*')) if p.is_file()}


def summary(out:Path) -> dict:
    "{subject: row} of the run summary in `out`"
    return {row['subject']: row for row in json.loads((out/'synth_summary.json').read_text())['subjects']}


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    "The cohort, an untrained model, and the three runs of the same command with the damage done between them"
    d = tmp_path_factory.mktemp('cohort')
    data, out = d/'data', d/'out'
    write_phantom_dataset(data, subjects=N, size=64, depth=8, progress=False)
    rng = np.random.default_rng(35)
    missing = {s.name: MS[rng.integers(len(MS))] for s in sorted(data.iterdir())}
    for s, m in missing.items(): (data/s/f'{s}-{m}.nii.gz').unlink()
    kept = [m for m in MS if m != missing[BROKEN]]
    broken = data/BROKEN/f'{BROKEN}-{kept[1]}.nii.gz'
    broken.write_bytes(b'\x1f\x8b\x08\x00' + bytes(range(256)) * 4)   # a gzip header, then garbage: unreadable
    torch.manual_seed(0)
    save_model(MedK2N.from_preset('cpu', size=32), d/'model')
    inputs = files(data)
    cmd = ('--data', data, '--model', d/'model', '--out', out, '--layout', 'brasyn', '--bs', 8)
    r = dict(data=data, out=out, missing=missing, broken=broken, inputs=inputs)
    r['first'] = synth(*cmd); r['after_first'] = files(out); r['rows_first'] = summary(out)
    r['csv_first'] = list(csv.DictReader((out/'synth_summary.csv').open()))
    r['second'] = synth(*cmd); r['after_second'] = files(out)
    # damage: one subject loses an output, another has a temporary file left by a run cut short
    good = sorted(s for s in missing if s != BROKEN)
    r['lost'], r['temp'] = good[0], good[1]
    (out/f"{good[0]}-{missing[good[0]]}.nii.gz").unlink()
    r['temp_file'] = out/f".tmp-0badc0de-{good[1]}-{missing[good[1]]}.nii.gz"
    r['temp_file'].write_bytes(b'half a volume')
    r['before_third'] = files(out)
    r['third'] = synth(*cmd); r['after_third'] = files(out); r['rows_third'] = summary(out)
    r['inside'] = synth('--data', data, '--model', d/'model', '--out', data/'synth', '--layout', 'brasyn')
    r['same'] = synth('--data', data, '--model', d/'model', '--out', data)
    r['after_all_inputs'] = files(data)
    return r


def test_first_run_writes_the_nine_and_reports_the_broken_one(cohort):
    rc, stdout, stderr = cohort['first']
    out, data, missing = cohort['out'], cohort['data'], cohort['missing']
    assert rc == 1, stderr
    good = sorted(s for s in missing if s != BROKEN)
    assert len(good) == 9
    assert sorted(p.name for p in out.glob('*.nii.gz')) == sorted(f'{s}-{missing[s]}.nii.gz' for s in good)
    # the broken subject: one line on stderr naming it and its file, and in the summary files
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f'{BROKEN}: failed: '), stderr
    assert cohort['broken'].name in lines[0] and 'cannot read' in lines[0]
    assert 'Traceback' not in stdout + stderr
    assert '9 done, 0 skipped (already complete), 1 failed' in stdout and cohort['broken'].name in stdout
    rows = cohort['rows_first']
    assert {s: r['status'] for s, r in rows.items()} == {**{s: 'done' for s in good}, BROKEN: 'failed'}
    assert cohort['broken'].name in rows[BROKEN]['reason']
    assert [r['targets'] for s, r in sorted(rows.items()) if s != BROKEN] == [[missing[s]] for s in good]
    table = cohort['csv_first']
    assert len(table) == N and {r['status'] for r in table} == {'done', 'failed'}


def test_outputs_on_the_inputs_grid_and_scale(cohort):
    out, data, missing = cohort['out'], cohort['data'], cohort['missing']
    for s, m in missing.items():
        if s == BROKEN: continue
        img = nib.load(out/f'{s}-{m}.nii.gz')
        for ref in (nib.load(p) for p in sorted((data/s).glob(f'{s}-t*.nii.gz'))):
            assert img.shape == ref.shape
            np.testing.assert_array_equal(img.affine, ref.affine)
            assert img.header.get_zooms() == ref.header.get_zooms()
        assert img.get_data_dtype() == np.float32
        a = img.get_fdata()
        # the reference input's intensity scale, not [0, 1]: inside the foreground, [0, 1] maps onto the reference's [p0.5, p99.5]
        vols = kio.load_case(kio.find_case(data/s))
        fg = kio.foreground_mask(vols.data)
        st = kio.normalize(vols.data[vols.reference_modality], fg)[1]
        inside = kio.image_like(fg.astype(np.float32), vols.reference).get_fdata() > 0
        assert vols.reference_modality == next(r for r in MS if r != m) and st.hi > 1.5
        assert np.isfinite(a).all() and not a[~inside].any()
        assert st.lo * (1 - 1e-5) <= a[inside].min() and a[inside].max() <= st.hi * (1 + 1e-5) and a.max() > 1


def test_second_run_redoes_nothing(cohort):
    rc, stdout, stderr = cohort['second']
    assert rc == 1 and f'{BROKEN}: failed' in stderr
    assert '0 done, 9 skipped (already complete), 1 failed' in stdout
    first, second = cohort['after_first'], cohort['after_second']
    summaries = {Path('synth_summary.json'), Path('synth_summary.csv')}
    assert set(first) == set(second)
    assert {k: v for k, v in first.items() if k not in summaries} == {k: v for k, v in second.items() if k not in summaries}


def test_half_written_subjects_are_redone(cohort):
    rc, stdout, stderr = cohort['third']
    out, missing = cohort['out'], cohort['missing']
    lost, temp = cohort['lost'], cohort['temp']
    assert rc == 1 and '2 done, 7 skipped (already complete), 1 failed' in stdout, stdout
    rows = cohort['rows_third']
    assert sorted(s for s, r in rows.items() if r['status'] == 'done') == sorted([lost, temp])
    assert (out/f'{lost}-{missing[lost]}.nii.gz').exists() and not cohort['temp_file'].exists()
    before, after = cohort['before_third'], cohort['after_third']
    redone = {Path(f'{s}-{missing[s]}.nii.gz') for s in (lost, temp)} | {Path(f'.synth-records/{s}.json') for s in (lost, temp)}
    untouched = {k: v for k, v in before.items() if k not in redone and k.name not in ('synth_summary.json', 'synth_summary.csv')}
    assert untouched and all(after[k] == v for k, v in untouched.items() if k != cohort['temp_file'].relative_to(out))
    assert not list(out.glob('.tmp-*'))


def test_output_folder_inside_or_equal_to_the_input_refused(cohort):
    data = cohort['data']
    for key, words in (('inside', 'is inside the data folder'), ('same', 'is the data folder')):
        rc, stdout, stderr = cohort[key]
        lines = [l for l in stderr.splitlines() if l.strip()]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith('med-k2n synth: error: ') and words in lines[0], stderr
    assert not (data/'synth').exists()


def test_no_output_is_an_input(cohort):
    data, out = cohort['data'], cohort['out']
    ins = {p.resolve() for p in data.rglob('*') if p.is_file()}
    outs = {p.resolve() for p in out.rglob('*') if p.is_file()}
    assert outs and ins and not ins & outs
    assert cohort['after_all_inputs'] == cohort['inputs']   # no input file touched by any run
