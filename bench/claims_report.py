"""The tables and figures of the claims protocol (`bench/claims.py`) from its saved per-training results.

    python bench/claims_report.py [RESULTS]      # default bench/claims

Every figure is a mean ± sd over training seeds of each seed's mean over the test subjects; the paired tests are
Wilcoxon signed-rank tests (`evaluate.signed_rank`) over (seed, subject) of a pattern, or over (seed, subject,
pattern) for a 14-pattern mean; "signs" lists the difference's sign at each seed.
"""
import json, sys, time
from pathlib import Path
import numpy as np, pandas as pd

MAIN = ['Med-K2N', 'U-Net', 'B0 (average fusion)']
LADDER = ['B0', 'B1', 'B2', 'B3', 'B4', 'Med-K2N']
STAGES = {'B0': 'Baseline fusion (simple average)', 'B1': '+ PreWeightNet', 'B2': '+ ThresholdNet', 'B3': '+ EffiWeightNet',
          'B4': '+ CMIM', 'Med-K2N': '+ Curriculum (B5 = Med-K2N)'}
PAPER_GAIN = {'B1': 0.52, 'B2': 0.16, 'B3': 0.68, 'B4': 0.39, 'Med-K2N': 0.13}
KINDS = {'noise': 'T2w at low SNR (Rician σ 0.15 added)', 'pure_noise': 'T2w replaced by pure noise', 'ghost': 'T2w with motion ghosting'}
REGIONS = {'': 'whole slice', '_brain': 'brain', '_tumour': 'tumour'}

def load(res:Path) -> dict:
    "Every saved result under RESULTS/runs, concatenated per kind, with a `seed` column"
    runs = sorted((res/'runs').glob('*_s*/done.json'))
    ev, rob, qual, info = [], [], [], []
    for d in runs:
        f = d.parent; i = json.loads(d.read_text())
        if (f/'eval.csv').exists(): ev.append(pd.read_csv(f/'eval.csv').assign(seed=i.get('seed')))
        if (f/'robustness.csv').exists(): rob.append(pd.read_csv(f/'robustness.csv').assign(seed=i.get('seed')))
        if (f/'quality.csv').exists(): qual.append(pd.read_csv(f/'quality.csv'))
        if 'model' in i: info.append(i)
    cat = lambda v: pd.concat(v, ignore_index=True) if v else pd.DataFrame()
    bra = [pd.read_csv(p) for p in sorted((res/'runs').glob('brasyn_s*/brasyn_results.csv'))]
    dice = [pd.read_csv(p) for p in sorted((res/'runs').glob('brasyn_s*/brasyn_dice.csv'))]
    tun = [json.loads(p.read_text()) for p in sorted((res/'tuning').glob('*.json'))] if (res/'tuning').exists() else []
    return dict(eval=cat(ev), robustness=cat(rob), quality=cat(qual), info=pd.DataFrame(info), brasyn=cat(bra), dice=cat(dice),
                tuning=pd.DataFrame(tun), protocol=json.loads((res/'protocol.json').read_text()))

def signed_rank(d) -> float:
    "Two-sided p of `evaluate.signed_rank` on paired differences `d`, NaN when fewer than two are non-zero (no test to speak of)"
    from med_k2n.evaluate import signed_rank as _sr
    d = np.asarray(d, float); d = d[~np.isnan(d)]
    return float('nan') if (d != 0).sum() < 2 else _sr(d)[1]

def fmt_p(p) -> str: return '–' if p != p else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")
def ms(v, d=2) -> str:
    v = np.asarray(v, float); v = v[~np.isnan(v)]
    if not len(v): return '–'
    return f"{v.mean():.{d}f} ± {v.std(ddof=1):.{d}f}" if len(v) > 1 else f"{v.mean():.{d}f}"
def signs(v) -> str: return ''.join('+' if x > 0 else ('−' if x < 0 else '0') for x in v)

def per_subject(ev:pd.DataFrame, metric:str) -> pd.DataFrame:
    "model × seed × subject × pattern: the metric averaged over the pattern's targets"
    return ev.groupby(['model', 'seed', 'subject', 'pattern', 'available', 'k'], sort=False)[metric].mean().reset_index()

def compare(ps:pd.DataFrame, metric:str, a:str, b:str, pattern=None) -> dict:
    "Model a − model b: mean ± sd over seeds of the seed means, per-seed signs and the paired test over (seed, subject[, pattern])"
    d = ps if pattern is None else ps[ps.pattern == pattern]
    wa = d[d.model == a].set_index(['seed', 'subject', 'pattern'])[metric]
    wb = d[d.model == b].set_index(['seed', 'subject', 'pattern'])[metric]
    diff = (wa - wb).dropna()
    if not len(diff): return dict(mean=float('nan'), sd=float('nan'), signs='', p=float('nan'), per_seed=[])
    per_seed = diff.groupby(level='seed').mean()
    return dict(mean=float(per_seed.mean()), sd=float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float('nan'),
                signs=signs(per_seed.values), p=signed_rank(diff.values), per_seed=per_seed.round(3).tolist(), n=len(diff))

def dstr(c) -> str:
    if c['mean'] != c['mean']: return '–'
    sd = f" ± {c['sd']:.2f}" if c['sd'] == c['sd'] else ''
    return f"{c['mean']:+.2f}{sd} ({c['signs']}, p {fmt_p(c['p'])})"

def seed_means(ps:pd.DataFrame, metric:str, model:str, pattern=None) -> np.ndarray:
    d = ps[ps.model == model] if pattern is None else ps[(ps.model == model) & (ps.pattern == pattern)]
    return d.groupby('seed')[metric].mean().values

# ------------------------------------------------------------------------------------------------------------ tables
def table1(ev:pd.DataFrame, region:str, models=MAIN) -> str:
    "Table 1 layout: 14 patterns × PSNR and SSIM per model (mean ± sd over seeds), Med-K2N − each other model"
    p, s = f'psnr{region}', f'ssim{region}'
    ps_p, ps_s = per_subject(ev, p), per_subject(ev, s)
    models = [m for m in models if m in set(ev.model)]
    others = [m for m in models if m != 'Med-K2N']
    pats = list(dict.fromkeys(ps_p[ps_p.model == models[0]].sort_values('k', kind='stable').pattern))
    lab = dict(zip(ps_p.pattern, ps_p.available))
    head = '| Available | ' + ' | '.join(f"{m} PSNR / SSIM" for m in models) + ' | ' + ' | '.join(f"Med-K2N − {m} (dB)" for m in others) + ' |'
    rows = [head, '|' + '---|' * (1 + len(models) + len(others))]
    for pat in pats + [None]:
        cells = [f"{ms(seed_means(ps_p, p, m, pat))} / {ms(seed_means(ps_s, s, m, pat), 3)}" for m in models]
        comps = [dstr(compare(ps_p, p, 'Med-K2N', o, pat)) for o in others]
        rows.append(f"| {'**Mean of 14**' if pat is None else lab[pat]} | " + ' | '.join(cells) + ' | ' + ' | '.join(comps) + ' |')
    return '\n'.join(rows)

def summary_table(ev:pd.DataFrame, models=MAIN) -> str:
    "One line per model: the 14-pattern mean PSNR/SSIM over the slice, the brain, the tumour and per tumour label"
    cols = [('psnr', 2), ('ssim', 3), ('psnr_brain', 2), ('ssim_brain', 3), ('psnr_tumour', 2), ('ssim_tumour', 3),
            ('psnr_ncr', 2), ('psnr_ed', 2), ('psnr_et', 2)]
    rows = ['| Model | ' + ' | '.join(c for c, _ in cols) + ' |', '|---|' + '---|' * len(cols)]
    for m in [m for m in models if m in set(ev.model)]:
        rows.append(f"| {m} | " + ' | '.join(ms(seed_means(per_subject(ev, c), c, m), d) for c, d in cols) + ' |')
    return '\n'.join(rows)

def ladder_table(ev:pd.DataFrame) -> str:
    rows = ['| Stage | Configuration | PSNR | PSNR brain | PSNR tumour | SSIM tumour | gain (dB, slice) | gain brain | gain tumour | paper gain |',
            '|---|---|---|---|---|---|---|---|---|---|']
    have = [m for m in LADDER if m in set(ev.model)]
    pss = {c: per_subject(ev, c) for c in ('psnr', 'psnr_brain', 'psnr_tumour', 'ssim_tumour')}
    prev = None
    for m in have:
        g = {c: (dstr(compare(pss[c], c, m, prev)) if prev else '–') for c in ('psnr', 'psnr_brain', 'psnr_tumour')}
        rows.append(f"| {'B5' if m == 'Med-K2N' else m} | {STAGES[m]} | {ms(seed_means(pss['psnr'], 'psnr', m))} | "
                    f"{ms(seed_means(pss['psnr_brain'], 'psnr_brain', m))} | {ms(seed_means(pss['psnr_tumour'], 'psnr_tumour', m))} | "
                    f"{ms(seed_means(pss['ssim_tumour'], 'ssim_tumour', m), 3)} | {g['psnr']} | {g['psnr_brain']} | {g['psnr_tumour']} | "
                    f"{'+%.2f' % PAPER_GAIN[m] if m in PAPER_GAIN else '–'} |")
        prev = m
    return '\n'.join(rows)

PAIRS = [('Med-K2N', 'U-Net'), ('Med-K2N', 'B0 (average fusion)'), ('B4', 'B3'), ('B3', 'U-Net'), ('B1', 'U-Net'), ('B1', 'B0')]

def pairs_table(ev:pd.DataFrame, pairs=PAIRS) -> str:
    "A − B over the 14-pattern mean, slice / brain / tumour, for chosen pairs (e.g. what CMIM costs, and the models without it against the U-Net)"
    rows = ['| A − B | PSNR slice (dB) | PSNR brain | PSNR tumour | SSIM brain | SSIM tumour |', '|---|---|---|---|---|---|']
    have = set(ev.model)
    for x, y in [p for p in pairs if set(p) <= have]:
        cells = [dstr(compare(per_subject(ev, c), c, x, y)) if c.startswith('psnr') else _d3(compare(per_subject(ev, c), c, x, y))
                 for c in ('psnr', 'psnr_brain', 'psnr_tumour', 'ssim_brain', 'ssim_tumour')]
        rows.append(f"| {x} − {y} | " + ' | '.join(cells) + ' |')
    return '\n'.join(rows)

def robustness_table(ev:pd.DataFrame, rob:pd.DataFrame) -> str:
    "Drop (clean − corrupted) over the 7 patterns with T2w as an input, per model and corruption, slice / brain / tumour"
    if not len(rob): return 'No robustness results.'
    key = ['model', 'seed', 'subject', 'pattern', 'target']
    rows = ['| Corruption | Model | PSNR clean → corrupted | drop | drop brain | drop tumour | drop, T2w the only input | drop, other inputs left | Med-K2N − model, drop (dB) |',
            '|---|---|---|---|---|---|---|---|---|']
    for kind, label in KINDS.items():
        r = rob[rob.kind == kind]
        if not len(r): continue
        m = r.merge(ev, on=key, suffixes=('_bad', ''))
        for c in ('psnr', 'psnr_brain', 'psnr_tumour'): m[f'drop{c[4:]}'] = m[c] - m[f'{c}_bad']
        m['alone'] = m.k == 1
        dd = m.groupby(['model', 'seed', 'subject', 'pattern'], sort=False)[['drop', 'drop_brain', 'drop_tumour']].mean().reset_index()
        for mod in [x for x in MAIN if x in set(m.model)]:
            mm = m[m.model == mod]
            sm = lambda c, sel=slice(None): mm[sel].groupby('seed')[c].mean().values
            comp = dstr(compare(dd, 'drop', 'Med-K2N', mod)) if mod != 'Med-K2N' else '–'   # negative: Med-K2N drops less
            rows.append(f"| {label} | {mod} | {ms(sm('psnr'))} → {ms(sm('psnr_bad'))} | {ms(sm('drop'))} | {ms(sm('drop_brain'))} | "
                        f"{ms(sm('drop_tumour'))} | {ms(sm('drop', mm.alone.values))} | {ms(sm('drop', ~mm.alone.values))} | {comp} |")
    return '\n'.join(rows)

def fusion_gain_table(ev:pd.DataFrame, models=MAIN) -> str:
    "What fusion adds over the set's best input alone (`evaluate.fusion_gain`), per model and K, slice / brain / tumour"
    from med_k2n.evaluate import fusion_gain
    rows = ['| Model | K | gain (dB, slice) | gain brain | gain tumour | p (slice, over (seed, subject, input set, target)) |', '|---|---|---|---|---|---|']
    for m in [m for m in models if m in set(ev.model)]:
        g = {c: pd.concat([fusion_gain(d, c).assign(seed=s) for s, d in ev[ev.model == m].groupby('seed')], ignore_index=True)
             for c in ('psnr', 'psnr_brain', 'psnr_tumour')}
        for k in sorted(set(g['psnr'].k)) + ['all']:
            sel = {c: (v if k == 'all' else v[v.k == k]) for c, v in g.items()}
            rows.append(f"| {m} | {'2 and 3' if k == 'all' else k} | " + ' | '.join(ms(sel[c].groupby('seed').gain.mean().values) for c in g)
                        + f" | {fmt_p(signed_rank(sel['psnr'].gain.values))} |")
    return '\n'.join(rows)

def identity_table(ev:pd.DataFrame, res:Path|None=None) -> str:
    "Identity accuracy per model (and, from RESULTS/*_real.json, the CLIPs' accuracy on the real test slices)"
    rows = ['| Images | CMIM in training | identity accuracy (by the judge CLIP, unless said) |', '|---|---|---|']
    cmim = {'Med-K2N': 'yes', 'U-Net': 'no', 'B0 (average fusion)': 'yes', 'B0': 'no', 'B1': 'no', 'B2': 'no', 'B3': 'no', 'B4': 'yes'}
    for m in [m for m in MAIN + LADDER[:-1] if m in set(ev.model)]:
        rows.append(f"| {m} | {cmim[m]} | {ms(ev[ev.model == m].groupby('seed').identity.mean().values * 100, 1)} % |")
    for name, lab in (('judge', 'the judge CLIP'), ('cmim_clip', "CMIM's CLIP")):
        f = Path(res)/f'{name}_real.json' if res is not None else None
        if f is not None and f.exists():
            j = json.loads(f.read_text())
            rows.append(f"| real test slices, {lab} | – | {100*j['mean']:.1f} % ({', '.join(f'{m} {100*v:.0f}' for m, v in j['per_modality'].items())}) |")
    if {'B3', 'B4'} <= set(ev.model):
        c = compare(per_subject(ev, 'identity'), 'identity', 'B4', 'B3')
        rows += ['', f"B4 − B3 (CMIM on − off, nothing else changed): {100*c['mean']:+.1f} points ({c['signs']}, p {fmt_p(c['p'])})."]
    return '\n'.join(rows)

def brasyn_tables(bra:pd.DataFrame, dice:pd.DataFrame) -> str:
    if not len(bra): return 'No BraSyn results.'
    out = ['| Model | SSIM tumour | SSIM healthy | PSNR | Med-K2N − model, SSIM tumour | Med-K2N − model, SSIM healthy |', '|---|---|---|---|---|---|']
    b = bra.assign(pattern=bra['missing'])   # `compare` pairs over (seed, subject, pattern)
    for m in [m for m in MAIN if m in set(b.model)]:
        sm = lambda c: b[b.model == m].groupby('seed')[c].mean().values
        comp = ['–' if m == 'Med-K2N' else _d3(compare(b, c, 'Med-K2N', m)) for c in ('ssim_tumour', 'ssim_healthy')]
        out.append(f"| {m} | {ms(sm('ssim_tumour'), 3)} | {ms(sm('ssim_healthy'), 3)} | {ms(sm('psnr'))} | {comp[0]} | {comp[1]} |")
    if len(dice):
        out += ['', '| Input set | ' + ' | '.join(f"Dice {r}" for r in ('ET', 'TC', 'WT')) + ' |', '|---|---|---|---|']
        for st, d in dice.groupby('set', sort=False):
            out.append(f"| {st} | " + ' | '.join(ms(d.groupby('seed')[r].mean().values, 3) for r in ('ET', 'TC', 'WT')) + ' |')
    return '\n'.join(out)

def _d3(c) -> str:
    if c['mean'] != c['mean']: return '–'
    sd = f" ± {c['sd']:.3f}" if c['sd'] == c['sd'] else ''
    return f"{c['mean']:+.3f}{sd} ({c['signs']}, p {fmt_p(c['p'])})"

def quality_table(q:pd.DataFrame) -> str:
    "Agreement of Med-K2N's quality outputs with the real error, per seed then mean ± sd"
    from scipy.stats import spearmanr, mannwhitneyu
    if not len(q): return 'No quality-map results.'
    rows = ['| Inputs | slices | Spearman (score, real SSIM) | mean pixel Pearson (quality map, abs. error) | Spearman (mean quality, mean abs. error) | AUROC: score flags the worst 10 % of slices |',
            '|---|---|---|---|---|---|']
    for cond in ('clean', 'noise', 'both'):
        per = []
        for s, d in q.groupby('seed'):
            d = d if cond == 'both' else d[d.condition == cond]
            if len(d) < 10: continue
            bad = d.real_ssim <= d.real_ssim.quantile(0.1)
            auc = mannwhitneyu(-d.score[bad], -d.score[~bad]).statistic / (bad.sum() * (~bad).sum())
            per.append((spearmanr(d.score, d.real_ssim).statistic, d.pixel_corr.mean(), spearmanr(d.mean_quality, d.mean_error).statistic, auc, len(d)))
        if not per: continue
        per = np.array(per)
        lab = {'clean': 'clean', 'noise': 'T2w at low SNR (patterns with T2w)', 'both': 'both pooled'}[cond]
        rows.append(f"| {lab} | {int(per[:, 4].mean())} per seed | {ms(per[:, 0], 3)} | {ms(per[:, 1], 3)} | {ms(per[:, 2], 3)} | {ms(per[:, 3], 3)} |")
    return '\n'.join(rows)

# ----------------------------------------------------------------------------------------------------------- figures
def figure_patterns(ev:pd.DataFrame, out:Path):
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
    models = [m for m in MAIN if m in set(ev.model)]
    for ax, (reg, lab) in zip(axs, REGIONS.items()):
        ps = per_subject(ev, f'psnr{reg}')
        pats = list(dict.fromkeys(ps[ps.model == models[0]].sort_values('k', kind='stable').pattern))
        names = dict(zip(ps.pattern, ps.available))
        w = 0.8 / len(models)
        for i, m in enumerate(models):
            v = [seed_means(ps, f'psnr{reg}', m, p) for p in pats]
            ax.bar(np.arange(len(pats)) + (i - (len(models)-1)/2) * w, [x.mean() for x in v], w,
                   yerr=[x.std(ddof=1) if len(x) > 1 else 0 for x in v], capsize=2, label=m)
        lo = min(ps.groupby(['model', 'pattern'])[f'psnr{reg}'].mean()) - 2
        ax.set_ylim(lo, None); ax.set_ylabel(f'PSNR {lab} (dB)')
        ax.set_xticks(range(len(pats)), [names[p] for p in pats], rotation=45, ha='right', fontsize=8)
    axs[0].legend(ncol=3, fontsize=8); axs[0].set_title('The 14 patterns (mean ± sd over training seeds)')
    fig.tight_layout(); fig.savefig(out, dpi=110); plt.close(fig)

def figure_ladder(ev:pd.DataFrame, out:Path):
    import matplotlib.pyplot as plt
    have = [m for m in LADDER if m in set(ev.model)]
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (reg, lab) in zip(axs, REGIONS.items()):
        ps = per_subject(ev, f'psnr{reg}')
        per = {m: ps[ps.model == m].groupby('seed')[f'psnr{reg}'].mean() for m in have}
        for s in sorted(set(ps.seed)):
            ax.plot(range(len(have)), [per[m].get(s, np.nan) for m in have], color='0.75', lw=1, marker='.')
        ax.errorbar(range(len(have)), [per[m].mean() for m in have], yerr=[per[m].std(ddof=1) if len(per[m]) > 1 else 0 for m in have],
                    color='C3', marker='o', capsize=3, lw=2, label='mean ± sd')
        ax.set_xticks(range(len(have)), ['B5' if m == 'Med-K2N' else m for m in have]); ax.set_title(f'PSNR, {lab}'); ax.set_ylabel('dB')
    axs[0].legend(fontsize=8); fig.suptitle('Table 3 ladder: each seed (grey) and the mean'); fig.tight_layout()
    fig.savefig(out, dpi=110); plt.close(fig)

def figure_grid(models:dict, cache, out:Path, task:str='t1n,t1c,t2w->t2f'):
    "A Fig-4-style grid: the test slice with the most tumour, inputs, truth and each model's output, with a tumour close-up"
    import matplotlib.pyplot as plt, torch
    from med_k2n.registry import load_model
    from med_k2n.core import parse_task
    from med_k2n.batch import predict_slices
    nets = {n: load_model(p, device='cpu').eval() for n, p in models.items()}
    ms_ = tuple(next(iter(nets.values())).modalities)
    t = parse_task(task, ms_)
    best = None
    for s in cache.splits['test']:
        a = cache.load(s)
        if 'seg' not in a or not all(a['present']): continue
        area = (a['seg'] > 0).reshape(len(a['seg']), -1).sum(1)
        z = int(area.argmax())
        if best is None or area[z] > best[2]: best = (s, a, area[z], z)
    if best is None: return
    s, a, _, z = best
    x = torch.from_numpy(a['x'][:, z:z+1].astype(np.float32)).transpose(0, 1)
    im = torch.tensor([m in t.inputs for m in ms_]); tm = torch.tensor([m in t.targets for m in ms_])
    j = ms_.index(t.targets[0])
    outs = {n: next(iter(predict_slices(net, x, im, tm, 1, 'quality')))[2].images[0, j].float().clamp(0, 1).numpy() for n, net in nets.items()}
    seg = a['seg'][z] > 0
    ys, xs = np.nonzero(seg); c0, c1 = ys.mean(), xs.mean(); h = max(8, int(max(np.ptp(ys), np.ptp(xs)) * 0.8) + 4)
    crop = (slice(max(0, int(c0) - h), int(c0) + h), slice(max(0, int(c1) - h), int(c1) + h))
    truth = x[0, j].numpy()
    cols = [(f'{m} (input)', x[0, ms_.index(m)].numpy()) for m in t.inputs] + [(f'{t.targets[0]} truth', truth)] + list(outs.items())
    fig, axs = plt.subplots(3, len(cols), figsize=(2.1 * len(cols), 6.6))
    for k, (lab, img) in enumerate(cols):
        axs[0, k].imshow(img, cmap='gray', vmin=0, vmax=1); axs[0, k].set_title(lab, fontsize=8)
        axs[0, k].contour(seg, levels=[0.5], colors='r', linewidths=0.5)
        axs[1, k].imshow(img[crop], cmap='gray', vmin=0, vmax=1)
        if k >= len(t.inputs) + 1:
            axs[2, k].imshow(np.abs(img - truth)[crop], cmap='magma', vmin=0, vmax=0.3)
            err = np.abs(img - truth)[seg].mean(); axs[2, k].set_title(f'|error| tumour {err:.3f}', fontsize=8)
        for r in range(3): axs[r, k].axis('off')
    axs[1, 0].set_title('tumour close-up', fontsize=8)
    fig.suptitle(f'{task}, test subject {s}, slice {z} (seed-0 models); row 3: |error| in the close-up'); fig.tight_layout()
    fig.savefig(out, dpi=110); plt.close(fig)

def report(res, grid_models:dict|None=None, cache=None) -> str:
    res = Path(res); d = load(res); ev = d['eval']
    if not len(ev): sys.exit(f"no results under {res/'runs'}: run bench/claims.py first")
    pr = d['protocol']; seeds = sorted(set(ev.seed))
    info = d['info']
    size = (f"Protocol: phantom (data seed {pr['data_seed']}) of {pr['train_subjects']} training / {pr['valid_subjects']} validation / "
            f"{pr['test_subjects']} test subjects at {pr['size']} px, preset {pr['preset']}, {pr['epochs']} epochs of batch {pr['bs']} "
            f"({int(info.steps.iloc[0]) if len(info) else '?'} steps) per training, mixed precision {pr['amp']}, training seeds {seeds}; "
            f"scored on " + ('every test slice with ≥ 5 % brain' if not pr['max_slices'] else f"{pr['max_slices']} evenly spaced slices (≥ 5 % brain) per test subject") + '.')
    pv = json.loads((res/'provenance.json').read_text()) if (res/'provenance.json').exists() else {}
    done = [p.stat().st_mtime for p in (res/'runs').glob('*/done.json')]
    when = (f"Run from {pv.get('started', '?')} to {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(max(done)))} on commit "
            f"{pv.get('commit', '?')}, {pv.get('machine', 'machine not recorded')}, torch {pv.get('torch', '?')}.") if done else ''
    parts = ['# The paper\'s claims on the realistic phantom (bench/claims.py)', '', size, '', when, '']
    if len(d['tuning']):
        t = d['tuning']
        parts += ['## Learning rates (tuning seed, validation subjects)', '', '| Model | lr | validation PSNR | validation PSNR brain |', '|---|---|---|---|']
        parts += [f"| {r.model} | {r.lr:g} | {r.valid_psnr:.2f} | {r.valid_psnr_brain:.2f} |" for r in t.itertuples()] + ['']
    if len(info):
        parts += ['## Trainings', '', '| Model | seeds | lr | steps | train s (mean) | params |', '|---|---|---|---|---|---|']
        for m, g in info.groupby('model', sort=False):
            parts.append(f"| {m} | {len(g)} | {g.lr.iloc[0]:g} | {int(g.steps.iloc[0])} | {g.train_seconds.mean():.0f} | {g.params.iloc[0]/1e6:.2f} M |")
        parts.append('')
    parts += ['## Summary: the 14-pattern means', '', summary_table(ev, MAIN + LADDER[:-1]), '']
    for reg, lab in REGIONS.items():
        parts += [f'## Table 1, {lab}', '', table1(ev, reg), '']
    parts += ['## Table 3: the ablation ladder (14-pattern means)', '', ladder_table(ev), '',
              '## Pairs: what CMIM costs, and the models without it against the U-Net (14-pattern means)', '', pairs_table(ev), '',
              'B3 is Med-K2N without CMIM and without the curriculum; B1 the PreWeightNet stage; B4 − B3 is CMIM alone.', '',
              '## Robustness: one input corrupted (the 7 patterns with T2w as an input)', '', robustness_table(ev, d['robustness']), '',
              'A negative Med-K2N − model difference: Med-K2N drops less.', '',
              '## What fusion adds over the best single input', '', fusion_gain_table(ev), '',
              '## Identity accuracy of the outputs', '', identity_table(ev, res), '',
              '## BraSyn: one sequence missing per test subject', '', brasyn_tables(d['brasyn'], d['dice']), '',
              '## Quality map against the real error (Med-K2N)', '', quality_table(d['quality'])]
    figure_patterns(ev, res/'patterns.png'); figure_ladder(ev, res/'ladder.png')
    if grid_models and cache is not None: figure_grid(grid_models, cache, res/'grid.png')
    parts += ['', '![](patterns.png)', '', '![](ladder.png)'] + (['', '![](grid.png)'] if (res/'grid.png').exists() else [])
    text = '\n'.join(parts) + '\n'
    (res/'report.md').write_text(text)
    print(text)
    return text

if __name__ == '__main__':
    report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent/'claims')
