"""The paper's claims on the realistic phantom, over several training seeds, over the brain and inside the tumour
(issue 39; not a test). One command runs the whole protocol and resumes where it stopped:

    python bench/claims.py                      # the CPU protocol: about 2 h on 2 cores
    python bench/claims.py --report-only        # the tables and figures again, from the saved results
    python bench/claims.py --preset paper --size 256 --results bench/claims_gpu --work /tmp/claims_gpu   # on a GPU

What it trains, each from scratch with the same data, task curriculum (where the configuration has it), input
corruption, loss and number of optimisation steps, at every training seed (`--seeds`, default 0 1 2):
- the main comparison: Med-K2N (the canonical model, with CMIM and the curriculum: Table 3's B5), the unified
  zero-filled U-Net, and B0 (average fusion) — Med-K2N with its weighting nets replaced by the plain average and
  everything else (CMIM, curriculum) kept, so that the two differ only in the fusion. The U-Net trains with the same
  loss less CMIM's two terms (as the paper's baselines), and the same curriculum: CMIM is a Med-K2N component, and
  with it the U-Net is left far from converged (validation PSNR 15.0 dB against 22.3 without, at the tuning seed and
  its tuned rate, 213 steps at 64 px), which would weaken the baseline.
- the ablation ladder of Table 3: B0 (average) → B1 (+PreWeightNet) → B2 (+ThresholdNet) → B3 (+EffiWeightNet)
  → B4 (+CMIM) → B5 (+curriculum), where B0–B4 train without the curriculum (`learner.ABLATIONS`) and B5 is the
  Med-K2N of the main comparison (the same configuration, so not trained twice).
Each architecture trains at its own learning rate, tuned here first: Med-K2N's and the U-Net's peak rate
(`learner.DEFAULT_LR`) times 1/3, 1 and 3, one training each at a tuning seed (`--tune-seed`) that no reported
run uses, chosen by the validation subjects' mean PSNR over the 14 patterns; a best rate at the edge of the grid
gets one more rate beyond it (at most twice), so the chosen rate is a peak, not a bound. The ladder's stages share Med-K2N's
rate (one architecture). The modality CLIP that CMIM needs is pretrained once (`--vlm-minutes`); identity accuracy
is judged by a second CLIP pretrained with another seed, so that no model is scored by the network it was trained
against. The BraSyn protocol's Dice comes from one tumour segmenter trained on the real training images.

What it measures, per training, saved as soon as that training is scored (`RESULTS/runs/<model>_s<seed>/`):
every test subject × pattern × target of the 14 patterns (`evaluate`, all slices with ≥ 5 % brain: PSNR/SSIM over
the slice, the brain and the tumour, per tumour label, identity accuracy); for the main models the robustness runs
(T2w with added Rician noise of σ 0.15 — an acquisition at low SNR; T2w replaced by pure noise; T2w with motion
ghosting) and the BraSyn protocol (one sequence dropped per test subject: SSIM tumour / healthy, Dice of the
completed set); for Med-K2N the agreement of its quality outputs with the real error (per slice: predicted score
against the real SSIM; per pixel: the quality map against the real |error|).

The report (`RESULTS/report.md`, figures `RESULTS/*.png`) gives every figure as mean ± sd over the training seeds
(each seed's mean over test subjects) with paired Wilcoxon signed-rank tests over (seed, subject) — or (seed,
subject, pattern) for the 14-pattern means — and each comparison's sign per seed.

Heavy files (the phantom, the slice cache, checkpoints, synthesised volumes) go to `--work`; the raw per-training
results and the report to `--results` (default `bench/claims`, committed). The protocol's size (`--size`,
`--train-subjects`, `--epochs`...) is written into `protocol.json` and every table; a resumed run must use the same.
"""
import argparse, json, os, shutil, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
from pathlib import Path
import numpy as np, pandas as pd, torch
from med_k2n.io import atomic_write

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work', default='/tmp/med_k2n_claims', help='phantom, cache, checkpoints, synthesised volumes')
    p.add_argument('--results', default=str(Path(__file__).parent/'claims'), help='raw per-training results, report and figures (committed)')
    p.add_argument('--seeds', default='0,1,2', help='training seeds, comma-separated')
    p.add_argument('--tune-seed', type=int, default=100, help='training seed of the learning-rate tuning runs (reported runs never use it)')
    p.add_argument('--lr-factors', default='0.333,1,3', help="learning rates tried per architecture, as factors of learner.DEFAULT_LR ('1': no tuning)")
    p.add_argument('--preset', default='cpu')
    p.add_argument('--size', type=int, default=64, help='slice size (and phantom size)')
    p.add_argument('--train-subjects', type=int, default=16)
    p.add_argument('--valid-subjects', type=int, default=3)
    p.add_argument('--test-subjects', type=int, default=8)
    p.add_argument('--data-seed', type=int, default=0, help='seed of the phantom and of the train/valid/test split (fixed over training seeds)')
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--bs', type=int, default=8)
    p.add_argument('--amp', default=None, choices=['bf16', 'fp16', 'none'], help='mixed precision (default: bf16 where the CPU or GPU has it)')
    p.add_argument('--corrupt-p', type=float, default=0.2, help='training input corruption (learner.InputCorruption)')
    p.add_argument('--vlm-minutes', type=float, default=2., help='time cap of each modality-CLIP pretraining')
    p.add_argument('--seg-epochs', type=int, default=8, help='epochs of the tumour segmenter (BraSyn Dice)')
    p.add_argument('--max-slices', type=int, default=16, help='score at most this many evenly spaced slices (with >= 5%% brain) per test subject (0: all)')
    p.add_argument('--models', default='all', help="'all', or a comma list of the configurations to run (names of CONFIGS)")
    p.add_argument('--report-only', action='store_true', help='no training: the report and figures from the saved results')
    p.add_argument('--no-brasyn', action='store_true', help='skip the BraSyn protocol (and its segmenter)')
    p.add_argument('--no-progress', action='store_true')
    a = p.parse_args(argv)
    a.seeds = [int(s) for s in a.seeds.split(',') if s.strip()]
    a.lr_factors = [float(f) for f in a.lr_factors.split(',') if f.strip()]
    if a.amp is None: a.amp = 'bf16' if torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'none'
    return a

def log(*a): print(time.strftime('%H:%M:%S'), *a, flush=True)

# name: (arch, train kwargs, uses the CMIM VLM, main comparison)
CONFIGS = {
    'Med-K2N': ('medk2n', {}, True, True),                        # = Table 3's B5: EffiWeightNet fusion, CMIM, curriculum
    'U-Net': ('unet', {}, False, True),                           # without CMIM: with it the U-Net is crippled (see below)
    'B0 (average fusion)': ('medk2n', dict(fusion='B0'), True, True),
    'B0': ('medk2n', dict(ablation='B0'), False, False),
    'B1': ('medk2n', dict(ablation='B1'), False, False),
    'B2': ('medk2n', dict(ablation='B2'), False, False),
    'B3': ('medk2n', dict(ablation='B3'), False, False),
    'B4': ('medk2n', dict(ablation='B4'), True, False),
}
MAIN = [n for n, c in CONFIGS.items() if c[3]]
from claims_report import KINDS   # the corruptions of the robustness runs (the report names them); bench/ is on the path of a script run from it
CORRUPT = 't2w'
PROTOCOL_KEYS = ('preset', 'size', 'train_subjects', 'valid_subjects', 'test_subjects', 'data_seed', 'epochs', 'bs', 'amp',
                 'corrupt_p', 'vlm_minutes', 'seg_epochs', 'max_slices', 'lr_factors', 'tune_seed')

def slug(name:str) -> str: return name.split(' ')[0] if name != 'B0 (average fusion)' else 'B0avg'

def write_json(path:Path, obj): atomic_write(path, lambda t: Path(t).write_text(json.dumps(obj, indent=1, default=float)))
def write_csv(path:Path, df:pd.DataFrame): atomic_write(path, lambda t: df.to_csv(t, index=False))

# ---------------------------------------------------------------------------------------------------------------- setup
def check_protocol(a):
    "protocol.json holds the size of the protocol; a resumed run must use the same"
    res = Path(a.results); res.mkdir(parents=True, exist_ok=True)
    want = {k: getattr(a, k) for k in PROTOCOL_KEYS}
    f = res/'protocol.json'
    if f.exists():
        have = json.loads(f.read_text())
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff: sys.exit(f"{f} was written with other settings {diff} (saved, asked): use the same, or another --results folder")
    else: write_json(f, want)
    return want

def machine() -> str:
    "The CPU (and GPU) this runs on, in words"
    import platform
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ', no GPU'
    return f"{cpu}, {os.cpu_count()} cores{gpu}"

def write_provenance(a, started:str):
    "provenance.json: when the protocol started, on which commit and machine (kept from the first start of a resumed run)"
    import subprocess
    f = Path(a.results)/'provenance.json'
    if f.exists(): return
    try: commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()
    except OSError: commit = ''
    write_json(f, dict(started=started, commit=commit or 'unknown', machine=machine(), torch=torch.__version__))

def make_data(a):
    from med_k2n.phantom import write_phantom_dataset
    from med_k2n.data import prepare
    work = Path(a.work); n = a.train_subjects + a.valid_subjects + a.test_subjects
    data = work/'data'
    if not (work/'data.done').exists():
        t0 = time.time()
        write_phantom_dataset(data, subjects=n, size=a.size, seed=a.data_seed, progress=not a.no_progress)
        (work/'data.done').write_text('ok'); log(f"phantom: {n} subjects at {a.size} px in {time.time()-t0:.0f} s")
    cache = prepare(data, cache=work/'cache', size=a.size, valid_pct=a.valid_subjects/n, test_pct=a.test_subjects/n,
                    seed=a.data_seed, progress=not a.no_progress)
    got = {k: len(v) for k, v in cache.splits.items()}
    want = dict(train=a.train_subjects, valid=a.valid_subjects, test=a.test_subjects)
    if got != want: sys.exit(f"the splits of {cache.root.parent/'splits.json'} are {got}, not {want}: use a fresh --work")
    return data, cache

def pretrain_clip(a, cache, name, seed):
    "A modality CLIP (one for CMIM, one to judge identity), pretrained once"
    from med_k2n.vlm import pretrain_vlm
    out = Path(a.work)/name
    if not (out/'vlm.json').exists():
        t0 = time.time()
        pretrain_vlm(cache, out, size=a.size, seed=seed, max_minutes=a.vlm_minutes, progress=not a.no_progress)
        log(f"pretrained the {name} CLIP (seed {seed}) in {time.time()-t0:.0f} s")
    return out

def segmenter(a, data):
    from med_k2n.segment import train_seg
    out = Path(a.work)/'segmenter'
    if not (out/'model.json').exists():
        t0 = time.time()
        train_seg(data, out, epochs=a.seg_epochs, size=a.size, seed=a.data_seed, cache=Path(a.work)/'seg_cache', progress=not a.no_progress)
        log(f"trained the tumour segmenter in {time.time()-t0:.0f} s")
    return out

def judge_on_real(a, cache, judge, name:str='judge'):
    "The identity CLIP's accuracy on the real test slices of each modality (the ceiling of the outputs' identity accuracy)"
    from med_k2n.cmim import identity_accuracy
    from med_k2n.evaluate import scored_slices
    f = Path(a.results)/f'{name}_real.json'
    if f.exists(): return json.loads(f.read_text())
    imgs = {m: [] for m in cache.modalities}
    for s in cache.splits['test']:
        arr = cache.load(s)
        zs = scored_slices(arr['fg'], max_slices=a.max_slices or None)
        for k, m in enumerate(cache.modalities):
            if arr['present'][k]: imgs[m].append(torch.from_numpy(arr['x'][k, zs].astype(np.float32)))
    acc = {m: identity_accuracy(judge, torch.cat(v), m) for m, v in imgs.items() if v}
    res = dict(per_modality=acc, mean=float(np.mean(list(acc.values()))), slices=int(sum(len(torch.cat(v)) for v in imgs.values() if v)))
    write_json(f, res); log(f"{name} CLIP on the real test slices: {res['mean']:.1%}")
    return res

# ------------------------------------------------------------------------------------------------------------- training
def train_run(a, cache, folder:Path, name, seed, lr, vlm):
    "Train configuration `name` at `seed` into `folder` (from scratch: a half-trained checkpoint is not resumed)"
    from med_k2n.learner import train
    arch, kw, uses_vlm, _ = CONFIGS[name]
    t0 = time.time()
    learn = train(cache.root, folder, preset=a.preset, size=a.size, epochs=a.epochs, bs=a.bs, arch=arch, seed=seed, lr=lr,
                  vlm=str(vlm) if uses_vlm else None, corrupt=a.corrupt_p, amp=a.amp, progress=not a.no_progress, **kw)
    info = dict(model=name, seed=seed, lr=lr, epochs=a.epochs, steps=len(learn.dls.train) * a.epochs,
                train_seconds=round(learn.train_seconds, 1), params=sum(p.numel() for p in learn.model.parameters()))
    log(f"trained {name} seed {seed} lr {lr:g}: {info['steps']} steps in {time.time()-t0:.0f} s")
    return learn, info

def tune(a, cache, vlm) -> dict:
    "Each architecture's peak learning rate: DEFAULT_LR × each factor, one training at the tuning seed, best validation PSNR"
    from med_k2n.learner import DEFAULT_LR
    from med_k2n.evaluate import evaluate
    res = Path(a.results)/'tuning'; res.mkdir(parents=True, exist_ok=True)
    chosen = {}
    for name in ('Med-K2N', 'U-Net'):
        arch = CONFIGS[name][0]
        scores = {}
        def score(lr):
            done = res/f"{slug(name)}_lr{lr:g}.json"
            if not done.exists():
                learn, info = train_run(a, cache, Path(a.work)/'tuning'/f"{slug(name)}_lr{lr:g}", name, a.tune_seed, lr, vlm)
                r = evaluate(learn, split='valid', progress=False, name=name, max_slices=a.max_slices or None)
                write_json(done, dict(info, valid_psnr=float(r.psnr.mean()), valid_psnr_brain=float(r.psnr_brain.mean())))
            scores[lr] = json.loads(done.read_text())['valid_psnr']
        for f in a.lr_factors: score(float(f'{DEFAULT_LR[arch] * f:.3g}'))
        step = (max(a.lr_factors) / min(a.lr_factors)) ** (1 / (len(a.lr_factors) - 1)) if len(a.lr_factors) > 1 else 1   # the grid's ratio (3 for 1/3, 1, 3)
        for _ in range(2 if len(a.lr_factors) > 1 else 0):     # a best rate at the grid's edge: one more step beyond it, at most twice
            best = max(scores, key=scores.get)
            if best == max(scores): score(float(f'{best * step:.3g}'))
            elif best == min(scores): score(float(f'{best / step:.3g}'))
            else: break
        chosen[arch] = max(scores, key=scores.get)
        log(f"learning rate of {arch}: {chosen[arch]:g} (validation PSNR {', '.join(f'{k:g}: {v:.2f}' for k, v in scores.items())})")
    return chosen

# ------------------------------------------------------------------------------------------------------------- scoring
def quality_agreement(learn, name, seed, max_slices) -> pd.DataFrame:
    """Per test slice × pattern × target: Med-K2N's predicted score against the real SSIM, and the Pearson correlation of
    its quality map with the real |error| inside the brain; clean inputs, and T2w with added noise (a wider range of quality)"""
    from med_k2n.evaluate import eval_subjects, scored_slices, _unwrap, _subject_seed
    from med_k2n.core import eval_patterns
    from med_k2n.batch import predict_slices
    from med_k2n.metrics import slice_ssim
    from med_k2n.data import corrupt_slices
    model, _, _ = _unwrap(learn)
    ms = tuple(model.modalities); cache = learn.dls.cache
    rows = []
    model.eval()
    with torch.no_grad():
        for s in eval_subjects(cache, 'test'):
            arr = cache.load(s)
            zs = scored_slices(arr['fg'], max_slices=max_slices)
            x = torch.from_numpy(np.ascontiguousarray(arr['x'][:, zs])).float().transpose(0, 1)
            mask = torch.from_numpy(np.ascontiguousarray(arr['mask'][zs]))
            present = [m for m, p in zip(ms, arr['present']) if p]
            for cond in ('clean', 'noise'):
                xin = x.clone()
                if cond == 'noise': xin[:, ms.index(CORRUPT)] = corrupt_slices(x[:, ms.index(CORRUPT)], 'noise', _subject_seed(seed, s))
                for t in eval_patterns(ms):
                    if not set(t.inputs) <= set(present) or (cond == 'noise' and CORRUPT not in t.inputs): continue
                    tg = [m for m in t.targets if m in present]
                    if not tg: continue
                    im = torch.tensor([m in t.inputs for m in ms]); tm = torch.tensor([m in tg for m in ms])
                    for i, e, out in predict_slices(model, xin, im, tm, 32, 'quality'):
                        for m in tg:
                            j = ms.index(m); p = out.images[:, j].float().clamp(0, 1).cpu(); y = x[i:e, j]
                            real = slice_ssim(p, y, mask[i:e]); err = (p - y).abs(); q = out.quality[:, j].float().cpu()
                            for b in range(e - i):
                                mb = mask[i + b]
                                if mb.sum() < 20: continue
                                qe, ee = q[b][mb], err[b][mb]
                                rho = float(torch.corrcoef(torch.stack([qe, ee]))[0, 1]) if qe.std() > 0 and ee.std() > 0 else float('nan')
                                rows.append(dict(model=name, seed=seed, subject=s, condition=cond, pattern=str(t), target=m,
                                                 slice=int(zs[i + b]), score=float(out.scores[b, j]), real_ssim=float(real[b]),
                                                 pixel_corr=rho, mean_quality=float(qe.mean()), mean_error=float(ee.mean())))
    return pd.DataFrame(rows)

def score_run(a, learn, folder:Path, name, seed, judge):
    "Everything measured on one trained model, written into `folder` (the results folder of this run)"
    from med_k2n.evaluate import evaluate, robustness
    ms = a.max_slices or None
    t0 = time.time()
    clean = evaluate(learn, split='test', progress=False, name=name, vlm=judge, max_slices=ms)
    write_csv(folder/'eval.csv', clean)
    if CONFIGS[name][3]:
        frames = []
        for kind in KINDS:
            r = robustness(learn, corrupt_modality=CORRUPT, kind=kind, seed=seed, progress=False, name=name, max_slices=ms,
                           clean=clean.drop(columns=['identity']))
            frames.append(r['corrupt'].assign(kind=kind))
        write_csv(folder/'robustness.csv', pd.concat(frames, ignore_index=True))
    if name == 'Med-K2N': write_csv(folder/'quality.csv', quality_agreement(learn, name, seed, ms))
    log(f"scored {name} seed {seed} in {time.time()-t0:.0f} s")

def brasyn_run(a, seed, folders:dict, seg):
    "The BraSyn protocol for the main models of one seed"
    from med_k2n.brasyn_eval import evaluate_brasyn
    out = Path(a.results)/'runs'/f'brasyn_s{seed}'
    if (out/'done.json').exists(): return
    t0 = time.time()
    ev = evaluate_brasyn({n: str(folders[n]) for n in MAIN}, out=Path(a.work)/f'brasyn_s{seed}', split='test', seed=seed,
                         segmenter=str(seg), progress=False)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out/'brasyn_results.csv', ev.results.drop(columns=['file'], errors='ignore').assign(seed=seed))
    write_csv(out/'brasyn_dice.csv', ev.dice.assign(seed=seed))
    write_json(out/'done.json', dict(seconds=time.time()-t0, failures=ev.failures))
    log(f"BraSyn seed {seed}: {ev.results.subject.nunique()} subjects in {time.time()-t0:.0f} s")

def main(argv=None):
    a = parse_args(argv)
    import matplotlib; matplotlib.use('Agg')
    res = Path(a.results)
    if a.report_only:
        import claims_report; claims_report.report(res); return
    check_protocol(a)
    write_provenance(a, time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    Path(a.work).mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    log(f"device {dev} ({torch.cuda.get_device_name() if dev == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), preset {a.preset}, "
        f"{a.size} px, {a.train_subjects}/{a.valid_subjects}/{a.test_subjects} subjects, {a.epochs} epochs of bs {a.bs}, seeds {a.seeds}, amp {a.amp}")
    data, cache = make_data(a)
    vlm = pretrain_clip(a, cache, 'vlm_cmim', a.data_seed)
    judge_dir = pretrain_clip(a, cache, 'vlm_judge', a.data_seed + 1)
    from med_k2n.vlm import load_vlm
    judge = load_vlm(judge_dir, size=a.size)
    judge_on_real(a, cache, judge)
    judge_on_real(a, cache, load_vlm(vlm, size=a.size), 'cmim_clip')
    lrs = tune(a, cache, vlm)
    names = list(CONFIGS) if a.models == 'all' else [n.strip() for n in a.models.split(',')]
    bad = [n for n in names if n not in CONFIGS]
    if bad: sys.exit(f"--models: unknown {bad}; use {', '.join(CONFIGS)}")
    seg = None if a.no_brasyn else segmenter(a, data)
    for seed in a.seeds:
        folders = {}
        for name in names:
            folder = res/'runs'/f"{slug(name)}_s{seed}"; ckpt = Path(a.work)/'models'/f"{slug(name)}_s{seed}"
            folders[name] = ckpt
            if (folder/'done.json').exists(): continue
            folder.mkdir(parents=True, exist_ok=True)
            learn, info = train_run(a, cache, ckpt, name, seed, lrs[CONFIGS[name][0]], vlm)
            score_run(a, learn, folder, name, seed, judge)
            shutil.copy(ckpt/'history.csv', folder/'history.csv')
            write_json(folder/'done.json', info)
        if seg is not None and all(n in folders for n in MAIN) and all((f/'model.json').exists() for n, f in folders.items() if n in MAIN):
            brasyn_run(a, seed, folders, seg)
    import claims_report
    claims_report.report(res, grid_models={n: Path(a.work)/'models'/f"{slug(n)}_s{a.seeds[0]}" for n in MAIN}, cache=cache)
    log(f"protocol done in {(time.time()-t_all)/60:.1f} min")

if __name__ == '__main__':
    main()
