"""Where one training step goes (not a test): wall time per step, device-busy time, kernel launches and the top
operators (torch.profiler) of Med-K2N, the B0 average-fusion ablation and the U-Net baseline, each trained for a
few steps exactly as the learner's loss sees them (`K2NLoss` with the model's quality terms, AdamW, mixed precision
on a GPU), on random slices with one random K→N task per sample.

    python bench/profile_step.py [--models med,b0,unet] [--preset paper] [--size 256] [--bs 16] [--device cuda]

On the CPU, `--preset cpu --size 128 --bs 8` is the bench/quality.py setting. Prints one summary line per model
and, unless `--no-tables`, its operators sorted by device time (GPU) and by CPU time. Measured on one H200
(2026-11-27, paper preset, 256 px, bs 16, bf16, mambapy): Med-K2N 473-507 ms a step, B0 495, U-Net 58; the
GPU busy about 90 % of the step for all three, mostly in elementwise kernels (the mambapy scan).

`--fresh-tasks N` instead times N steps per curriculum stage with a new task draw every step, as training has, and
prints each step's time after the number of input frames in its batch. On the H200 (2026-11-27) this showed that a
batch shape met for the first time in the process costs about 1 s more: whichever model runs first pays it (Med-K2N
k->1 `37:3268 36:1723 36:646 34:1520 36:622` ms, repeated shapes 600-650 ms), the model run after it does not.
"""
import argparse, os, random, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from torch.profiler import profile, ProfilerActivity
from med_k2n.core import modality_set
from med_k2n.registry import create_model
from med_k2n.batch import K2NBatch

from med_k2n.losses import K2NLoss
from med_k2n.tasks import draw_tasks

MODELS = ('med', 'b0', 'unet')

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', default=','.join(MODELS), help=f"comma-separated, among {', '.join(MODELS)}")
    p.add_argument('--preset', default='paper', choices=('cpu', 'paper'))
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--bs', type=int, default=16)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', default=None, choices=('bf16', 'none'), help='default: bf16 on a GPU, none on the CPU')
    p.add_argument('--steps', type=int, default=2, help='profiled steps (after 3 warm-up and 5 timed ones)')
    p.add_argument('--no-tables', action='store_true', help='summary lines only')
    p.add_argument('--fresh-tasks', type=int, default=0, help='N > 0: time N steps per curriculum stage, a new task draw each, instead of profiling')
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    bad = [m for m in a.models.split(',') if m not in MODELS]
    if bad: p.error(f"unknown models {bad}: use {', '.join(MODELS)}")
    if a.amp is None: a.amp = 'bf16' if a.device.startswith('cuda') else 'none'
    return a

def build(name, a):
    "The model `name` of preset `a.preset` at `a.size`"
    if name == 'unet': return create_model(f'unet_{a.preset}', size=a.size)
    return create_model(f'medk2n_{a.preset}', size=a.size, fusion='B0' if name == 'b0' else 'full')

def trainer(name, a):
    "A fresh model `name` on `a.device`, its training step `step(x, inputs, targets)` (K2NLoss, AdamW, autocast as `a.amp`) and the device's sync"
    dev = a.device
    sync = torch.cuda.synchronize if dev.startswith('cuda') else (lambda: None)
    m = build(name, a).to(dev).train()
    loss_fn = K2NLoss()
    opt = torch.optim.AdamW(m.parameters(), 1e-4)
    def step(x, inputs, targets):
        with torch.autocast(dev.split(':')[0], dtype=torch.bfloat16, enabled=a.amp == 'bf16'):
            out = m(x * inputs[..., None, None], inputs, targets)
        loss = loss_fn(out, K2NBatch(x, inputs, targets, None, inputs | targets)); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if hasattr(m, 'update_running_stats'): m.update_running_stats(out, x, inputs, targets)
    return m, step, sync

def profile_model(name, a, x, inputs, targets):
    "Summary dict and the profiler's key averages of `steps` training steps of model `name`"
    dev = a.device
    m, train_step, sync = trainer(name, a)
    step = lambda: train_step(x, inputs, targets)
    for _ in range(3): step()
    sync(); t = time.perf_counter(); n = 5
    for _ in range(n): step()
    sync(); wall = (time.perf_counter() - t) / n
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith('cuda') else [])
    with profile(activities=acts) as prof:
        for _ in range(a.steps): step()
        sync()
    ev = prof.key_averages()
    kernels = [e for e in ev if e.device_type.name == 'CUDA']   # the kernels themselves, not the operators that launch them
    busy = sum(e.self_device_time_total for e in kernels) / a.steps / 1e3
    launches = sum(e.count for e in ev if 'LaunchKernel' in e.key) / a.steps
    return dict(model=name, params=sum(p.numel() for p in m.parameters()), ms=wall * 1e3, slices_per_s=a.bs / wall,
                busy_ms=busy, launches=launches), ev

def fresh_task_steps(name, a, x) -> dict:
    "Per curriculum stage, `(input frames, seconds)` of `a.fresh_tasks` training steps of model `name`, each on a new task draw"
    from med_k2n.core import CURRICULUM_STAGES
    _, step, sync = trainer(name, a)
    rng, ms = random.Random(a.seed), modality_set('brats')
    times = {}
    for stage in CURRICULUM_STAGES:
        times[stage] = []
        for _ in range(a.fresh_tasks):
            inputs, targets = (t.to(a.device) for t in draw_tasks(torch.ones(a.bs, len(ms), dtype=torch.bool), ms, rng, stage))
            sync(); t0 = time.perf_counter()
            step(x, inputs, targets); sync()
            times[stage].append((int(inputs.sum()), time.perf_counter() - t0))
    return times

def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(a.seed)
    ms = modality_set('brats')
    x = torch.rand(a.bs, len(ms), a.size, a.size, device=a.device)
    inputs, targets = draw_tasks(torch.ones(a.bs, len(ms), dtype=torch.bool), ms, random.Random(a.seed))
    inputs, targets = inputs.to(a.device), targets.to(a.device)
    name = torch.cuda.get_device_name() if a.device.startswith('cuda') else f'CPU, {torch.get_num_threads()} threads'
    print(f"# One training step: preset {a.preset}, {a.size} px, bs {a.bs}, {name}, mixed precision {a.amp}\n")
    gpu = a.device.startswith('cuda')
    if a.fresh_tasks:
        for n in a.models.split(','):   # in the order given: the first model meets every batch shape first
            for stage, ts in fresh_task_steps(n, a, x).items():
                med = sorted(t for _, t in ts)[len(ts) // 2]
                print(f"{n} {stage}: median {med*1e3:.0f} ms | " + ' '.join(f"{k}:{t*1e3:.0f}" for k, t in ts))
        return
    for n in a.models.split(','):
        s, ev = profile_model(n, a, x, inputs, targets)
        line = f"{n}: {s['params']/1e6:.1f} M params, {s['ms']:.0f} ms/step ({s['slices_per_s']:.1f} slices/s)"
        if gpu: line += f", GPU busy {s['busy_ms']:.0f} ms/step ({100*s['busy_ms']/s['ms']:.0f} %), {s['launches']:.0f} kernel launches/step"
        print(line)
        if not a.no_tables:
            if gpu: print(ev.table(sort_by='self_device_time_total', row_limit=12, max_name_column_width=60))
            print(ev.table(sort_by='cpu_time_total', row_limit=15, max_name_column_width=60))

if __name__ == '__main__': main()
