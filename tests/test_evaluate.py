"Evaluation harness: no target as input, only test subjects, CLI outputs, Wilcoxon, robustness, reproducibility"
import os, subprocess, sys, math
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np, pandas as pd, pytest, torch, torch.nn as nn

from med_k2n.core import eval_patterns
from med_k2n.data import prepare
from med_k2n.phantom import write_phantom_dataset
from med_k2n.model import MedK2N
from med_k2n.registry import save_model, load_model
from med_k2n.learner import train
from med_k2n.evaluate import evaluate, wilcoxon, table_markdown, robustness, pattern_scores

@pytest.fixture(scope='module')
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp('ph')
    write_phantom_dataset(d/'data', subjects=5, size=32, seed=0, progress=False)
    cache = prepare(d/'data', size=32, progress=False)
    torch.manual_seed(0)
    net = MedK2N.from_preset('cpu', size=32)
    save_model(net, d/'model', cache=str(cache.root))
    return d, cache, load_model(d/'model')

class Spy(nn.Module):
    def __init__(self, inner):
        super().__init__(); self.inner, self.calls = inner, []
        self.modalities, self.size, self.meta = inner.modalities, inner.size, inner.meta
    def forward(self, x, inputs, targets, accept=None):
        self.calls.append((x.clone(), inputs.clone(), targets.clone()))
        return self.inner(x, inputs, targets, accept=accept)

def test_no_target_as_input_and_only_test_subjects(phantom):
    d, cache, net = phantom
    spy = Spy(net)
    res = evaluate(spy, bs=64, progress=False, max_slices=6)
    assert set(res.subject) == set(cache.splits['test']) and len(cache.splits['test']) >= 1
    assert not set(res.subject) & set(cache.splits['train'])
    assert res.pattern.nunique() == 14
    assert len(res) == len(cache.splits['test']) * sum(len(t.targets) for t in eval_patterns('brats'))
    assert spy.calls
    for x, i, t in spy.calls:
        assert not (i & t).any()
        assert (x[~i] == 0).all()          # target / non-input channels are zeroed before the model sees them
    # every (pattern, target) scored is a target of that pattern, never one of its inputs
    for p, tg in zip(res.pattern, res.target):
        ins, tgs = p.split('->')
        assert tg in tgs.split(',') and tg not in ins.split(',')
    assert res[['psnr', 'ssim', 'psnr_brain', 'ssim_brain']].notna().all().all()

def test_refuses_training_subjects(phantom):
    d, cache, net = phantom
    with pytest.raises(ValueError, match='trained on'): evaluate(net, split='train', progress=False)
    with pytest.raises(ValueError, match='trained on'): evaluate(net, split='all', progress=False)
    with pytest.raises(ValueError, match='trained on'):
        evaluate(net, subjects=cache.splits['train'][:1], progress=False)

def test_wilcoxon_synthetic():
    rng = np.random.default_rng(1)
    subj = rng.normal(25, 3, 10)
    def rows(off): return pd.DataFrame([dict(subject=f's{i}', pattern='t1n->t2w', available='T1n', target='t2w',
                                             psnr=subj[i] + off + 0.05*rng.standard_normal(), ssim=0.9) for i in range(10)])
    a, b = rows(0.), rows(-0.5)
    w = wilcoxon(a, b)
    assert w.p.iloc[0] < 0.01 and abs(w['diff'].iloc[0] - 0.5) < 0.1 and w.n.iloc[0] == 10
    c = a.copy(); c['psnr'] = a.psnr + rng.normal(0, 1, 10)
    assert wilcoxon(a, c).p.iloc[0] > 0.05
    md = table_markdown({'ours': a, 'base': b})
    assert 'p base vs ours' in md and '*' in md.splitlines()[2]

def test_cli_writes_csv_and_table(phantom, tmp_path):
    d, cache, net = phantom
    from med_k2n.baseline import UNetBaseline
    save_model(UNetBaseline(size=32, base=8, depth=2), tmp_path/'b0', cache=str(cache.root))
    code = ("import sys; from med_k2n.cli import COMMANDS, run_command; COMMANDS.setdefault('eval', 'med_k2n.evaluate:eval_cmd'); "
            "sys.exit(run_command('eval', sys.argv[1:]))")
    out = tmp_path/'ev'
    r = subprocess.run([sys.executable, '-c', code, '--model', str(d/'model'), '--baseline', str(tmp_path/'b0'),
                        '--out', str(out), '--bs', '64', '--max-slices', '3', '--no-progress', '--no-figure'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = pd.read_csv(out/'results.csv')
    assert set(res.model) == {'model', 'b0'} and len(res) == 2 * 28 * len(cache.splits['test'])
    assert set(res.n_slices) == {3}
    md = (out/'table.md').read_text()
    assert md.count('\n| ') >= 2 * 16 and 'p b0 vs model' in md

def test_cli_missing_model_is_a_user_error(capsys, monkeypatch, tmp_path):
    from med_k2n import cli
    monkeypatch.setitem(cli.COMMANDS, 'eval', 'med_k2n.evaluate:eval_cmd')
    assert cli.run_command('eval', ['--out', str(tmp_path/'ev')]) == 2
    assert 'give the model with --model' in capsys.readouterr().err

def test_robustness_reports_drops_and_weights(phantom):
    d, cache, net = phantom
    rob = robustness(net, corrupt_modality='t1c', kind='ghost', bs=64, progress=False, max_slices=3)
    bp, s = rob['by_pattern'], rob['summary']
    assert len(bp) == sum(len(t.targets) for t in eval_patterns('brats') if 't1c' in t.inputs)
    assert bp.psnr_drop.notna().all() and np.isfinite(s['psnr_drop'])
    assert bp.psnr_brain_drop.notna().all() and np.isfinite(s['psnr_brain_drop']) and np.isfinite(s['psnr_brain_drop_fused'])
    assert np.isfinite(s['weight_clean']) and np.isfinite(s['weight_corrupt'])
    # corruption changes the inputs, so the scores change
    assert (bp.psnr_clean != bp.psnr_corrupt).any()

def test_same_seed_same_metrics(phantom, tmp_path):
    d, cache, net = phantom
    pats = ['t1n->t1c,t2w,t2f', 't1n,t2w->t1c,t2f', 't1n,t1c,t2w->t2f']
    scores = []
    for k in range(2):
        train(d/'data', tmp_path/f'm{k}', size=32, epochs=1, bs=8, seed=3, progress=False)
        m = load_model(tmp_path/f'm{k}')
        assert m.meta['cache'] == str(cache.root)
        scores.append(evaluate(m, patterns=pats, bs=64, progress=False))
    a, b = scores
    assert len(a) == len(b) == 6
    assert np.allclose(a.psnr, b.psnr, atol=0.05) and np.allclose(a.psnr_brain, b.psnr_brain, atol=0.05)


@pytest.fixture
def quality_bench():
    "bench/quality.py loaded as a module (it is a script, not part of the package)"
    return load_bench('quality')

def load_bench(name:str):
    "bench/<name>.py loaded as a module"
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(f'{name}_bench', Path(__file__).parents[1]/'bench'/f'{name}.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


def test_bench_pools_robustness_over_runs(quality_bench):
    "bench/quality.py --combine: a run's robustness figures count by its test subjects; different corruptions are refused"
    q = quality_bench
    a = dict(model='Med-K2N', modality='t2w', kind='noise', n_patterns=7, n_subjects=6, psnr_drop=1.0, fusion_weight_clean=0.4)
    b = dict(a, n_subjects=2, psnr_drop=3.0, fusion_weight_clean=0.0)
    p = q.pool_robustness([a, b])
    assert p['n_subjects'] == 8 and p['n_patterns'] == 7 and p['model'] == 'Med-K2N' and p['kind'] == 'noise'
    assert abs(p['psnr_drop'] - 1.5) < 1e-9 and abs(p['fusion_weight_clean'] - 0.3) < 1e-9
    with pytest.raises(ValueError, match='different inputs'): q.pool_robustness([a, dict(b, kind='ghost')])


def test_bench_models_selection(quality_bench):
    "bench/quality.py --models: the chosen main models in the table's order; Med-K2N required, unknown names refused"
    q = quality_bench
    assert list(q.main_models(q.parse_args([]))) == list(q.MAIN)
    a = q.parse_args(['--models', 'B0, med'])
    assert a.models == 'med,b0' and list(q.main_models(a)) == ['Med-K2N', 'B0 (average fusion)']
    assert not q.parse_args([]).average_at_test and q.parse_args(['--average-at-test']).average_at_test
    for bad in ('unet,b0', 'med,resnet'):
        with pytest.raises(SystemExit): q.parse_args(['--models', bad])


def test_profile_step_fresh_tasks(capsys):
    "bench/profile_step.py --fresh-tasks: one line per model and curriculum stage, each step's input-frame count and time"
    from med_k2n.core import CURRICULUM_STAGES
    load_bench('profile_step').main(['--models', 'med,b0', '--preset', 'cpu', '--size', '32', '--bs', '2', '--device', 'cpu', '--fresh-tasks', '2'])
    lines = [l for l in capsys.readouterr().out.splitlines() if ' median ' in l]
    assert [l.split(':')[0] for l in lines] == [f'{m} {s}' for m in ('med', 'b0') for s in CURRICULUM_STAGES]
    for l in lines:
        steps = l.split('| ')[1].split()
        assert len(steps) == 2 and all(int(k) >= 2 and float(t) > 0 for k, t in (st.split(':') for st in steps))   # bs 2: at least one frame each


def test_bench_combine_fusion_gain(quality_bench, tmp_path):
    "bench/quality.py --combine: the pooled report has the table of what fusion adds over the best input alone, over both runs' subjects"
    import pandas as pd
    from med_k2n.core import eval_patterns
    from med_k2n.evaluate import pattern_label
    for run, level in (('r1', 24.), ('r2', 22.)):
        rows = [dict(model=m, subject=f's{i}', pattern=p, available=pattern_label(p), k=len(p.split('->')[0].split(',')), target=t,
                     n_slices=4, psnr=level + i + len(p.split('->')[0].split(',')) * gain, ssim=0.9, psnr_brain=level - 6, ssim_brain=0.8)
                for m, gain in (('Med-K2N', 0.5), ('B0 (average fusion)', 0.2)) for i in range(3)
                for p in map(str, eval_patterns('brats')) for t in p.split('->')[1].split(',')]
        (tmp_path/run).mkdir(); pd.DataFrame(rows).to_csv(tmp_path/run/'results.csv', index=False)
    md = quality_bench.combine([tmp_path/'r1', tmp_path/'r2'])
    assert 'No robustness table: 2 of the runs have no runs.json.' in md
    fg = md.split('## What fusion adds over the best input alone')[1]
    lines = [l for l in fg.splitlines() if l.startswith('| Med-K2N') or l.startswith('| B0')]
    assert len(lines) == 6                                         # per model: 2 inputs, 3 inputs, all ≥ 2
    med2 = lines[0].split(' | ')
    assert med2[1:3] == ['2', '72']                                # 6 subjects (3 per run) × 6 input sets × 2 targets
    assert med2[5] == '+0.50'                                      # each extra input adds 0.5 dB in these results
