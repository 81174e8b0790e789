"""Quality benchmark (not a test): Med-K2N against the zero-filled U-Net baseline and the B0 average-fusion
ablation, trained on the same phantom data with the same number of optimisation steps and the same loss,
scored on every K→N pattern of the paper's Table 1 protocol, with paired Wilcoxon tests and the
corrupted-input robustness test; `--ablation` adds the B0→B5 ladder of Table 3 on t1n,t1c,t2w→t2f.

    python bench/quality.py [--ablation] [--minutes 30] [--out /tmp/med_k2n_quality]

Defaults: a fixed phantom (seed 0) of 16 training, 1 validation and 6 test subjects at 128 px (6, so that a
per-pattern paired Wilcoxon test over subjects can reach p < 0.05: with 4 its smallest p is 0.125), the cpu
preset, batch 8, bf16 mixed precision (`--amp`; on a CPU when it has bf16 instructions, where it trains Med-K2N about
1.25x faster than float32 at the same quality). The three main models differ only in the network: the same data, task curriculum, input corruption
(`--corrupt-p`, `learner.InputCorruption`), loss and number of steps; each trains at its architecture's peak learning
rate (`learner.DEFAULT_LR`: 1e-3 for Med-K2N and B0, 3e-3 for the U-Net, which at 1e-3 is left far from converged),
unless `--lr` sets one for all. The training budget `--minutes` is for the main models together: the slices/s of
each model are measured on a few training steps first, and the number of epochs (the same for all three,
hence the same number of optimisation steps) is the largest that fits. `--epochs N` overrides it. `--models med,b0` trains and scores only those (Med-K2N always), the budget then for them.
Evaluation (14 patterns x every test slice with at least 5% foreground, the kind the models train on
(`evaluate`'s default), plus the robustness runs) comes on
top of the training budget; on a CPU it scores 12 evenly spaced slices per test subject (`--max-slices`, 0 for all).
Med-K2N is scored twice, with its quality-driven acceptance (`accept='quality'`, the default at inference) and
with every auxiliary frame accepted (`accept='all'`, as in training), so the effect of the gate shows; `--average-at-test`
scores it a third time with the plain average in place of its weighting nets (`fusion='B0'` on the trained network: every
available frame averaged in the canonical order, with no quality gate, trust, decoder context or prior fallback, as in B0), so
what those add at inference shows. With `accept='quality'` a rejected auxiliary
frame's update is undone and its weight used is 0; the robustness table shows that weight and, beside it, the fusion
weight the weighting nets gave the corrupted frame before the gate. The robustness test runs twice by default
(`--kinds`): T2w with heavy Rician noise added (σ 0.15: the anatomy still shows, so a model may denoise it and use it)
and T2w replaced by pure noise of the same σ (the issue's "one input replaced by heavy noise": nothing left to use). Reduced runs for a quick check: `--train-subjects 4 --test-subjects 2 --size 64 --epochs 1 --max-slices 8`.

`--snr-scale LOW HIGH` writes the phantom with acquisitions of varying quality (each series of each subject at its
drawn SNR times a factor drawn log-uniformly in the range; `make_phantom`'s `snr_scale`): the default phantom already draws
each series' SNR in a clinical range, and this widens the spread, so quality-driven fusion has more to choose from.

Everything goes to `--out`: the phantom, the slice cache, the checkpoints, results.csv and report.md.
`--combine DIR [DIR ...]` pools earlier runs (say `--seed 0`, `--seed 1`, `--seed 2`, each with its own `--out`) into one table
whose paired tests run over (run, subject, pattern): one run per model cannot separate two models closer than the spread
between training runs. It pools the robustness table too (from each run's runs.json), each run weighted by its test subjects.
"""
import argparse, json, math, os, statistics, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from pathlib import Path
import torch

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='/tmp/med_k2n_quality', help='working and output folder')
    p.add_argument('--minutes', type=float, default=30., help='training budget for the main models together (all three unless --models)')
    p.add_argument('--epochs', type=int, default=None, help='epochs per model (overrides the budget)')
    p.add_argument('--models', default=','.join(SHORT), help=f"main models to train and score, comma-separated among {', '.join(SHORT)} "
                   "(med is always one: the others are compared with it); the budget is for these together")
    p.add_argument('--average-at-test', action='store_true', help="also score the trained Med-K2N with the plain average fusion at inference "
                   "(fusion='B0' on its own weights): what its weighting nets add at test time")
    p.add_argument('--ablation', action='store_true', help='also train and score the B0→B5 ladder (Table 3)')
    p.add_argument('--preset', default='cpu', help="MedK2N / U-Net preset: 'cpu' or 'paper'")
    p.add_argument('--size', type=int, default=None, help="slice size (default: the preset's, 128 cpu / 256 paper)")
    p.add_argument('--train-subjects', type=int, default=16)
    p.add_argument('--valid-subjects', type=int, default=1)
    p.add_argument('--test-subjects', type=int, default=6)
    p.add_argument('--bs', type=int, default=8, help='training batch size')
    p.add_argument('--eval-bs', type=int, default=16, help='evaluation batch size')
    p.add_argument('--amp', default=None, choices=['bf16', 'fp16', 'none'], help='mixed precision of every model (default: bf16 on a GPU, and on a CPU with bf16 instructions (oneDNN), else none)')
    p.add_argument('--lr', type=float, default=None, help='peak learning rate of every model (default: each architecture\'s, learner.DEFAULT_LR)')
    p.add_argument('--seed', type=int, default=0, help='seed of the phantom, the splits and the training runs')
    p.add_argument('--snr-scale', type=float, nargs=2, default=(1., 1.), metavar=('LOW', 'HIGH'), help="the phantom's SNR of each modality of each subject times a factor drawn log-uniformly in [LOW, HIGH] (acquisitions of varying quality; default 1 1: nominal)")
    p.add_argument('--max-slices', type=int, default=None, help='score at most this many slices per test subject (default 12 on a CPU, all on a GPU; 0: all)')
    p.add_argument('--corrupt', default='t2w', help='input modality corrupted in the robustness test')
    p.add_argument('--corrupt-p', type=float, default=0.2, help='training: probability that a sample with >= 2 inputs gets one input corrupted, as does a sample with one input (InputCorruption; 0: off)')
    p.add_argument('--kinds', default='noise,pure_noise', help="corruptions of the robustness test, comma-separated: 'noise' (added), 'pure_noise' (the input replaced by noise), 'ghost'")
    p.add_argument('--vlm-minutes', type=float, default=3., help='time cap of the VLM pretraining for B4/B5 (--ablation)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--workers', type=int, default=0, help='processes writing the phantom and the slice cache (0: one per CPU core)')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--combine', nargs='+', metavar='DIR', help='no training: pool the results.csv of earlier runs (e.g. one per --seed) into one '
                   'Table 1, each run\'s test subjects kept apart, so the Wilcoxon tests pair (run, subject, pattern)')
    a = p.parse_args(argv)
    models = [m.strip().lower() for m in a.models.split(',') if m.strip()]
    bad = [m for m in models if m not in SHORT]
    if bad: p.error(f"--models: unknown {bad}; use {', '.join(SHORT)}")
    if 'med' not in models: p.error("--models must include med: every other model is compared with Med-K2N")
    a.models = ','.join(m for m in SHORT if m in models)
    if a.amp is None: a.amp = 'bf16' if torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'none'
    return a

def log(*a): print(*a, flush=True)

def make_data(a, out:Path):
    "The phantom and its slice cache, with splits forced to the requested subject counts"
    from med_k2n.phantom import write_phantom_dataset
    from med_k2n.data import prepare
    n = a.train_subjects + a.valid_subjects + a.test_subjects
    data = out/'data'
    t0 = time.time()
    write_phantom_dataset(data, subjects=n, size=a.size, seed=a.seed, progress=not a.no_progress, workers=a.workers, snr_scale=tuple(a.snr_scale))
    log(f"phantom: {n} subjects at {a.size} px in {time.time()-t0:.0f} s -> {data}")
    cache = prepare(data, cache=out/'cache', size=a.size, valid_pct=a.valid_subjects/n, test_pct=a.test_subjects/n,
                    seed=a.seed, progress=not a.no_progress, workers=a.workers)
    got = {k: len(v) for k, v in cache.splits.items()}
    want = dict(train=a.train_subjects, valid=a.valid_subjects, test=a.test_subjects)
    if got != want:
        sys.exit(f"the splits of {out/'cache'/'splits.json'} are {got}, not {want}: they are kept once drawn, use a fresh --out")
    log(f"slice cache {cache.root}: " + ', '.join(f"{k} {v} subjects / {cache.n_slices(k, 0.05)} training slices" for k, v in got.items()))
    return cache

MAIN = {  # name: (arch, ablation, fusion)
    'Med-K2N': ('medk2n', None, None),
    'U-Net': ('unet', None, None),
    'B0 (average fusion)': ('medk2n', None, 'B0'),
}
SHORT = dict(med='Med-K2N', unet='U-Net', b0='B0 (average fusion)')   # --models names

def main_models(a) -> dict:
    "The entries of MAIN that `--models` selects, in MAIN's order"
    keep = {SHORT[m] for m in a.models.split(',')}
    return {n: v for n, v in MAIN.items() if n in keep}

# The three main models differ only in the network: the same data, task curriculum, input corruption, loss and
# steps. So the B0 of the main table is Med-K2N with average fusion, trained with the curriculum like the other
# two; the ladder of --ablation keeps Table 3's definitions (B0-B4 without the curriculum, B5 with it).

def model_kwargs(a, arch, fusion=None):
    "The fusion of a Med-K2N variant (each architecture is its registered preset `<arch>_<preset>`)"
    return {} if fusion is None else dict(fusion=fusion)

PROBE_REPS = 3   # timed batches per curriculum stage in `probe_speed`

def probe_speed(a, cache, arch, ablation, fusion=None):
    """Training slices/s of a fresh model as `train` will run it: batches from the real training DataLoader
    (augmentation included), the real loss (K2NLoss with the quality terms) and an AdamW step; per curriculum stage
    the median of `PROBE_REPS` batches after one of warm-up, weighted by the stage's share of the run (uniform tasks
    when the curriculum is off).
    Later stages have more targets per sample and cost more, so a probe on the first stage or on one loss
    term alone would underestimate the run (the first version of this probe did, by about 2x)."""
    from med_k2n.learner import k2n_learner
    from med_k2n.tasks import draw_tasks, TaskSampler
    from med_k2n.batch import K2NBatch
    from med_k2n.data import k2n_dataloaders
    from med_k2n.core import CURRICULUM_STAGES, CURRICULUM_FRACTIONS
    import random
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    dls = k2n_dataloaders(cache, bs=a.bs, seed=a.seed, device=dev)
    learn = k2n_learner(dls, arch=arch, preset=a.preset, ablation=ablation, seed=a.seed, corrupt=a.corrupt_p, **model_kwargs(a, arch, fusion))
    model = learn.model.to(dev).train()
    curriculum = any(isinstance(c, TaskSampler) and c.curriculum for c in learn.cbs)
    stages = list(zip(CURRICULUM_STAGES, CURRICULUM_FRACTIONS)) if curriculum else [(None, 0.25)] * 4
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def forever():
        while True: yield from dls.train
    rng, batches = random.Random(a.seed), forever()   # a small training set may hold fewer batches than the probe takes
    ctx = torch.autocast(dev, dtype=torch.bfloat16 if a.amp == 'bf16' else torch.float16, enabled=a.amp != 'none')   # as the learner trains
    def step(stage):
        sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
        sync(); t0 = time.time()
        x, present, mask = next(batches)[:3]
        i, t = draw_tasks(present.cpu(), cache.modalities, rng, stage)
        i, t = i.to(dev), t.to(dev)
        opt.zero_grad(set_to_none=True)
        with ctx: out = model(x, i, t)
        learn.loss_func(out, K2NBatch(x, i, t, mask, present)).backward(); opt.step()
        if hasattr(model, 'update_running_stats'): model.update_running_stats(out, x, i, t)   # as the RunningStats callback does
        sync(); return time.time() - t0
    for st, _ in stages: step(st)                          # warm-up, one batch per stage
    # then the median of PROBE_REPS batches per stage: on a GPU a batch shape seen for the first time in the process
    # costs about 1 s more (H200, paper preset, 256 px; most likely cuDNN picking kernels for it), and the first model
    # probed met every shape first, so one timed batch made it look twice as slow as the same network probed second
    per_batch = sum(f * statistics.median(step(st) for _ in range(PROBE_REPS)) for st, f in stages) / sum(f for _, f in stages)
    return a.bs / per_batch

def train_one(a, cache, out:Path, name, arch, ablation, epochs, vlm=None, fusion=None):
    from med_k2n.learner import train
    folder = out/'models'/name.split(' ')[0]
    t0 = time.time()
    learn = train(cache.root, folder, preset=a.preset, size=a.size, epochs=epochs, bs=a.bs, arch=arch, ablation=ablation,
                  seed=a.seed, lr=a.lr, vlm=vlm, corrupt=a.corrupt_p, amp=a.amp, progress=not a.no_progress, **model_kwargs(a, arch, fusion))
    steps = len(learn.dls.train) * epochs
    log(f"trained {name}: {epochs} epoch(s), {steps} steps of {a.bs}, {learn.train_seconds:.0f} s, "
        f"{learn.slices_per_second:.2f} slices/s (incl. validation), wall {time.time()-t0:.0f} s")
    return learn, dict(model=name, epochs=epochs, steps=steps, train_seconds=round(learn.train_seconds, 1),
                       slices_per_second=round(learn.slices_per_second, 2), params=sum(p.numel() for p in learn.model.parameters()))

def combine(dirs) -> str:
    "One Table 1 (whole slice and brain) over the results.csv of several runs, a subject of run d named 'd/subject'"
    import pandas as pd
    from med_k2n.evaluate import table_markdown, fusion_gain_markdown
    frames = []
    for d in dirs:
        f = Path(d)/'results.csv'
        if not f.exists(): sys.exit(f"{f} not found: --combine takes the --out folders of earlier runs of this benchmark")
        r = pd.read_csv(f); r['subject'] = Path(d).name + '/' + r.subject.astype(str); frames.append(r)
    allr = pd.concat(frames, ignore_index=True)
    results = {m: g.reset_index(drop=True) for m, g in allr.groupby('model', sort=False)}
    ours = 'Med-K2N' if 'Med-K2N' in results else None
    out = [f"# Pooled over {len(dirs)} runs: {', '.join(str(d) for d in dirs)}", '',
           table_markdown(results, ours, title='Whole slice'), '', table_markdown(results, ours, brain=True, title='Inside the brain mask'),
           '', '## What fusion adds over the best input alone', '', fusion_gain_markdown(results)]
    runs = [json.loads((Path(d)/'runs.json').read_text()).get('robustness', {}) for d in dirs if (Path(d)/'runs.json').exists()]
    if len(runs) < len(dirs): out += ['', f"No robustness table: {len(dirs) - len(runs)} of the runs have no runs.json."]
    else:
        from med_k2n.evaluate import robustness_markdown
        pooled = {n: {'summary': pool_robustness([r[n] for r in runs])} for n in runs[0] if all(n in r for r in runs)}
        if pooled: out += ['', '## Robustness, pooled', '', robustness_markdown(pooled),
                           '', 'Each figure is the mean over the runs weighted by their test subjects.']
    return '\n'.join(out)

def pool_robustness(summaries:list) -> dict:
    "One robustness summary from those of several runs (same model, modality and corruption): numbers averaged, weighted by each run's test subjects"
    if len({(s['modality'], s['kind']) for s in summaries}) != 1: raise ValueError("pool_robustness: the runs corrupted different inputs or kinds")
    w = [s['n_subjects'] for s in summaries]
    out = {k: v for k, v in summaries[0].items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    for k, v in summaries[0].items():
        if k not in out: out[k] = sum(wi * s[k] for wi, s in zip(w, summaries)) / sum(w)
    out['n_subjects'], out['n_patterns'] = sum(w), summaries[0]['n_patterns']
    return out

def main(argv=None):
    a = parse_args(argv)
    if a.combine:
        print(combine(a.combine)); return
    if a.threads: torch.set_num_threads(a.threads)
    from med_k2n.registry import preset_args
    if a.size is None: a.size = preset_args(f'medk2n_{a.preset}')[1]['size']
    if a.max_slices is None: a.max_slices = None if torch.cuda.is_available() else 12
    a.max_slices = a.max_slices or None
    import matplotlib; matplotlib.use('Agg')
    from med_k2n.evaluate import evaluate, table_markdown, fusion_gain_markdown, robustness, robustness_markdown, write_results, figure_grid, display_name
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    log(f"device {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
        f"preset {a.preset}, {a.size} px, bs {a.bs}, seed {a.seed}, mixed precision {a.amp}")
    t_all = time.time()
    cache = make_data(a, out)
    n_train = cache.n_slices('train', 0.05)

    # 1. throughput first, then the epochs that fit the budget (same for every model: same steps)
    chosen = main_models(a)
    speeds = {n: probe_speed(a, cache, arch, abl, fus) for n, (arch, abl, fus) in chosen.items()}
    for n, s in speeds.items(): log(f"probe: {n}: {s:.2f} training slices/s")
    per_epoch = sum(n_train / s for s in speeds.values())
    if a.epochs is None:
        a.epochs = max(1, int(a.minutes * 60 * 0.9 // per_epoch))
        log(f"budget {a.minutes:g} min for the {len(chosen)} models: one epoch of each ≈ {per_epoch/60:.1f} min in all -> {a.epochs} epoch(s)")
        if per_epoch > a.minutes * 60: log(f"WARNING: even one epoch (≈ {per_epoch/60:.1f} min) exceeds the budget")
    # 2. train
    learners, runs = {}, []
    for n, (arch, abl, fus) in chosen.items():
        learners[n], info = train_one(a, cache, out, n, arch, abl, a.epochs, fusion=fus)
        info['probe_slices_per_second'] = round(speeds[n], 2); runs.append(info)
    # 3. evaluate every pattern
    results = {}
    for n, learn in learners.items():
        t0 = time.time()
        results[n] = evaluate(learn, split='test', bs=a.eval_bs, progress=not a.no_progress, name=n, max_slices=a.max_slices)
        log(f"evaluated {n}: {len(results[n])} rows in {time.time()-t0:.0f} s")
    t0 = time.time()
    results['Med-K2N (accept all)'] = evaluate(learners['Med-K2N'], split='test', bs=a.eval_bs, progress=not a.no_progress,
                                               name='Med-K2N (accept all)', max_slices=a.max_slices, accept='all')
    log(f"evaluated Med-K2N with accept='all' in {time.time()-t0:.0f} s")
    if a.average_at_test:
        from med_k2n.learner import unwrap_model
        med, t0 = unwrap_model(learners['Med-K2N'].model), time.time()
        trained, med.fusion = med.fusion, 'B0'   # the same trained network, run as B0 runs: average, canonical order, no trust, no prior
        try: results['Med-K2N (average at test)'] = evaluate(learners['Med-K2N'], split='test', bs=a.eval_bs, progress=not a.no_progress,
                                                            name='Med-K2N (average at test)', max_slices=a.max_slices)
        finally: med.fusion = trained
        log(f"evaluated Med-K2N with average fusion at inference in {time.time()-t0:.0f} s")
    write_results(results, out/'results.csv')
    figure_grid(learners['Med-K2N'], out=out/'grid.png')
    # 4. robustness
    rob = {}
    for kind in [k for k in a.kinds.split(',') if k]:
        for n, learn in learners.items():
            rob[f"{n}, {kind}"] = robustness(learn, corrupt_modality=a.corrupt, kind=kind, bs=a.eval_bs, seed=a.seed,
                                             progress=not a.no_progress, name=n, max_slices=a.max_slices, clean=results[n])
    # 5. report
    train_tbl = ['| Model | params | epochs | steps | train s | slices/s (train) | slices/s (probe) |', '|---|---|---|---|---|---|---|']
    train_tbl += [f"| {r['model']} | {r['params']/1e6:.2f} M | {r['epochs']} | {r['steps']} | {r['train_seconds']:.0f} | "
                  f"{r['slices_per_second']:.2f} | {r['probe_slices_per_second']:.2f} |" for r in runs]
    head = (f"Phantom seed {a.seed}: {a.train_subjects} train / {a.valid_subjects} valid / {a.test_subjects} test subjects, "
            f"{a.size} px, preset {a.preset}, device {dev}, mixed precision {a.amp}; {n_train} training slices per epoch"
            + (f"; SNR of each input times a factor in [{a.snr_scale[0]:g}, {a.snr_scale[1]:g}] per subject" if tuple(a.snr_scale) != (1, 1) else '')
            + (f"; at most {a.max_slices} slices per test subject scored" if a.max_slices else '') + '.')
    parts = ['# Med-K2N quality benchmark', '', head, '', '## Training', '', *train_tbl, '',
             '## Table 1 protocol', '', table_markdown(results, 'Med-K2N', title='Whole slice'), '',
             table_markdown(results, 'Med-K2N', brain=True, title='Inside the brain mask'), '',
             '## What fusion adds over the best input alone', '', fusion_gain_markdown(results), '',
             '## Robustness', '', robustness_markdown(rob)]
    # 6. ablation ladder (Table 3)
    if a.ablation:
        from med_k2n.vlm import pretrain_vlm
        t0 = time.time()
        vdir = out/'vlm'
        pretrain_vlm(cache, vdir, size=a.size, seed=a.seed, max_minutes=a.vlm_minutes, progress=not a.no_progress)
        log(f"pretrained the VLM in {time.time()-t0:.0f} s")
        task = 't1n,t1c,t2w->t2f'
        ladder = {}
        for b in ('B0', 'B1', 'B2', 'B3', 'B4', 'B5'):
            ladder[b], info = train_one(a, cache, out, f"{b} (ablation)", 'medk2n', b, a.epochs, vlm=str(vdir) if b in ('B4', 'B5') else None)
            runs.append(info)
        names = {'B0': 'Baseline fusion (simple average)', 'B1': '+ Weight prediction (PreWeightNet)', 'B2': '+ Threshold filtering (ThresholdNet)',
                 'B3': '+ Effective weight (EffiWeightNet)', 'B4': '+ CMIM interaction', 'B5': '+ Curriculum learning'}
        rows, prev = ['| Stage | Configuration | PSNR (SSIM) | Gain | PSNR brain (SSIM) |', '|---|---|---|---|---|'], None
        for b, learn in ladder.items():
            r = evaluate(learn, patterns=[task], bs=a.eval_bs, progress=False, name=b, max_slices=a.max_slices)
            p, s, pb, sb = r.psnr.mean(), r.ssim.mean(), r.psnr_brain.mean(), r.ssim_brain.mean()
            rows.append(f"| {b} | {names[b]} | {p:.2f} ({s:.3f}) | {'–' if prev is None else f'{p-prev:+.2f}'} | {pb:.2f} ({sb:.3f}) |")
            prev = p
        parts += ['', f'## Ablation ladder (Table 3 layout), {task}', '', *rows, '',
                  f"Each stage trained from scratch for {a.epochs} epoch(s) with the same data and seed; B4/B5 use the VLM "
                  f"pretrained here for CMIM; B0–B4 without curriculum, B5 with it (`learner.ABLATIONS`)."]
    parts += ['', f"Total wall time {(time.time()-t_all)/60:.1f} min."]
    report = '\n'.join(parts) + '\n'
    (out/'report.md').write_text(report)
    (out/'runs.json').write_text(json.dumps(dict(args=vars(a), runs=runs, robustness={k: v['summary'] for k, v in rob.items()}), indent=1))
    print(report)
    log(f"wrote {out/'report.md'}, {out/'results.csv'}, {out/'grid.png'}, {out/'runs.json'}")

if __name__ == '__main__':
    main()
