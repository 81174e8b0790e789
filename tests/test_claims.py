"The claims protocol's bookkeeping (bench/claims.py, bench/claims_report.py) on synthetic saved results: statistics, tables, resume checks"
import json, os, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
BENCH = Path(__file__).resolve().parents[1]/'bench'
sys.path.insert(0, str(BENCH))
import claims, claims_report as cr
from med_k2n.core import eval_patterns
from med_k2n.evaluate import pattern_label

SEEDS, SUBJECTS = (0, 1, 2), [f'sub{i}' for i in range(6)]
# true offsets (dB) of each model over B0 (average fusion), the same inside the brain and the tumour
OFFSET = {'Med-K2N': 0.5, 'U-Net': -1.0, 'B0 (average fusion)': 0.0, 'B0': -0.4, 'B1': -0.2, 'B2': -0.3, 'B3': 0.1, 'B4': 0.3}

def synthetic_eval(model, seed, rng):
    rows = []
    for t in eval_patterns('brats'):
        for s in SUBJECTS:
            base = 24 + 0.3 * len(t.inputs) + rng.normal(0, 0.5)      # subject × pattern difficulty, shared by the models below
            for m in t.targets:
                v = base + OFFSET[model] + rng.normal(0, 0.05)
                rows.append(dict(model=model, subject=s, pattern=str(t), available=pattern_label(t), k=len(t.inputs), target=m,
                                 psnr=v, ssim=0.9, psnr_brain=v - 7, ssim_brain=0.8, psnr_tumour=v - 9, ssim_tumour=0.6,
                                 psnr_ncr=v - 10, psnr_ed=v - 9, psnr_et=v - 8, identity=0.97 if model in ('B4', 'Med-K2N') else 0.9))
    return pd.DataFrame(rows)

@pytest.fixture(scope='module')
def results(tmp_path_factory):
    res = tmp_path_factory.mktemp('claims')
    a = claims.parse_args(['--results', str(res), '--work', str(res/'work')])
    claims.check_protocol(a)
    for seed in SEEDS:
        for model in OFFSET:
            rng = np.random.default_rng(seed)            # the same subject difficulties for every model of a seed: paired
            f = res/'runs'/f"{claims.slug(model)}_s{seed}"; f.mkdir(parents=True)
            ev = synthetic_eval(model, seed, rng)
            ev.to_csv(f/'eval.csv', index=False)
            (f/'done.json').write_text(json.dumps(dict(model=model, seed=seed, lr=1e-3, epochs=3, steps=222, train_seconds=100., params=4e6)))
    return res

def test_compare_recovers_offsets(results):
    ev = cr.load(results)['eval']
    ps = cr.per_subject(ev, 'psnr')
    c = cr.compare(ps, 'psnr', 'Med-K2N', 'B0 (average fusion)')
    assert abs(c['mean'] - 0.5) < 0.02 and c['signs'] == '+++' and c['p'] < 1e-6 and c['n'] == 3 * 6 * 14
    c = cr.compare(ps, 'psnr', 'Med-K2N', 'U-Net', pattern='t1n->t1c,t2w,t2f')
    assert abs(c['mean'] - 1.5) < 0.05 and c['signs'] == '+++' and c['n'] == 3 * 6
    assert np.isnan(cr.compare(ps, 'psnr', 'Med-K2N', 'no such model')['mean'])
    # per seed means: three values, each near its seed's mean
    test = cr.seed_means(ps, 'psnr', 'Med-K2N'); assert len(test) == 3

def test_signed_rank_and_format():
    assert np.isnan(cr.signed_rank([0, 0, 1]))                       # fewer than two non-zero differences
    assert cr.signed_rank(np.arange(1, 21)) < 1e-4
    assert cr.ms([1., 2., 3.]) == '2.00 ± 1.00' and cr.ms([float('nan')]) == '–' and cr.signs([1, -2, 0]) == '+−0'

def test_tables(results):
    ev = cr.load(results)['eval']
    t1 = cr.table1(ev, '_tumour')
    body = [l for l in t1.splitlines() if l.startswith('| ') and not l.startswith('| Available')]
    assert len(body) == 15 and body[-1].startswith('| **Mean of 14**')
    assert '+1.50' in body[-1] and '+0.50' in body[-1]                # Med-K2N − U-Net, Med-K2N − B0 (average fusion)
    lad = cr.ladder_table(ev).splitlines()
    assert len(lad) == 2 + 6 and lad[-1].startswith('| B5 ') and '+0.20' in lad[-1]   # B5 (Med-K2N) − B4 = 0.5 − 0.3
    assert '+0.40' in lad[5]                                           # B3 − B2 = 0.1 − (−0.3)
    ident = cr.identity_table(ev)
    assert '+7.0 points' in ident                                      # B4 − B3: 97 % against 90 %

def test_report_writes_tables_and_figures(results):
    text = cr.report(results)
    assert (results/'report.md').read_text() == text
    for f in ('patterns.png', 'ladder.png'): assert (results/f).stat().st_size > 1000
    assert 'No robustness results.' in text and 'No BraSyn results.' in text and 'Table 3' in text

def test_protocol_must_match_on_resume(results):
    a = claims.parse_args(['--results', str(results), '--epochs', '4'])
    with pytest.raises(SystemExit, match='epochs'): claims.check_protocol(a)
    claims.check_protocol(claims.parse_args(['--results', str(results)]))   # the same settings resume

def test_configs_are_the_ladder_of_the_learner():
    from med_k2n.learner import ABLATIONS
    for b in ('B0', 'B1', 'B2', 'B3', 'B4'): assert claims.CONFIGS[b][1] == dict(ablation=b) and claims.CONFIGS[b][2] == ABLATIONS[b][1]
    assert ABLATIONS['B5'] == ('B3', True, True)                       # Med-K2N: EffiWeightNet fusion, CMIM and curriculum
    assert claims.CONFIGS['Med-K2N'] == ('medk2n', {}, True, True) and cr.LADDER[-1] == 'Med-K2N' and cr.MAIN == claims.MAIN
