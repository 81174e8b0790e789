"""Benchmark of the networks on this machine's CPU (not a test): forward and forward+backward time per slice
for the `cpu` and `paper` MedK2N presets and the U-Net baseline, at 128 px, batch 8, task t1n,t2w->t1c,t2f
(2 inputs -> 2 targets), with FLOPs per slice (torch.utils.flop_counter: matmuls and convolutions only) and
the achieved GFLOP/s, next to a measured float32 matmul peak of this CPU. (`bench/budget.py` is the compute-budget
benchmark: training steps with the loss and optimiser, both presets at their sizes, memory, before/after.)

    python bench/model.py [--size 128] [--bs 8] [--reps 3] [--threads 0]

Prints one Markdown table. `--threads 0` keeps torch's default thread count.
"""
import argparse, os, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from torch.utils.flop_counter import FlopCounterMode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from budget import conv_backward_flop   # torch's formula overcounts a grouped convolution's weight gradient
from med_k2n.core import parse_task
from med_k2n.model import MedK2N
from med_k2n.baseline import UNetBaseline

def matmul_peak(n=2048, reps=5):
    "Best float32 GFLOP/s of an n x n matmul"
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float('inf')
    for _ in range(reps):
        t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9

def timeit(fn, reps):
    "Best of `reps` wall times (the FLOP-counting runs before it are the warm-up)"
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return min(ts)

def bench(name, model, x, i, t, reps):
    def fwd():
        model.eval()
        with torch.no_grad(): model(x, i, t)
    def fwd_bwd():
        model.train(); model.zero_grad(set_to_none=True)
        out = model(x, i, t)
        (out.images - x).abs()[t].mean().backward()
    with FlopCounterMode(display=False) as fc: fwd()
    f_fwd = fc.get_total_flops()
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}) as fc: fwd_bwd()
    f_fb = fc.get_total_flops()
    B = len(x)
    tf, tb = timeit(fwd, reps), timeit(fwd_bwd, reps)
    n = sum(p.numel() for p in model.parameters())
    return (f"| {name} | {n/1e6:.2f} | {tf/B*1e3:.1f} | {f_fwd/B/1e9:.2f} | {f_fwd/tf/1e9:.1f} "
            f"| {tb/B*1e3:.1f} | {f_fb/B/1e9:.2f} | {f_fb/tb/1e9:.1f} |")

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=128); p.add_argument('--bs', type=int, default=8)
    p.add_argument('--reps', type=int, default=3); p.add_argument('--threads', type=int, default=0)
    p.add_argument('--models', default='medk2n-cpu,medk2n-paper,unet-cpu,unet-paper', help='comma list of rows to run')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ms = ('t1n', 't1c', 't2w', 't2f')
    ii, tt = parse_task('t1n,t2w->t1c,t2f', ms).masks(ms)
    x = torch.rand(a.bs, len(ms), a.size, a.size)
    i, t = torch.tensor([ii] * a.bs), torch.tensor([tt] * a.bs)
    peak = matmul_peak()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} logical CPUs; "
          f"{a.size} px, batch {a.bs}, task t1n,t2w->t1c,t2f; float32 matmul peak {peak:.1f} GFLOP/s\n")
    print("| model | params (M) | fwd ms/slice | fwd GFLOP/slice | fwd GFLOP/s | fwd+bwd ms/slice | fwd+bwd GFLOP/slice | fwd+bwd GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|")
    models = {'medk2n-cpu': ('MedK2N cpu (convnext_atto)', lambda: MedK2N.from_preset('cpu', ms, size=a.size)),
              'medk2n-paper': ('MedK2N paper (sam2_hiera_tiny)', lambda: MedK2N.from_preset('paper', ms, size=a.size)),
              'unet-cpu': ('UNetBaseline cpu', lambda: UNetBaseline.from_preset('cpu', ms, size=a.size)),
              'unet-paper': ('UNetBaseline paper', lambda: UNetBaseline.from_preset('paper', ms, size=a.size))}
    for key in a.models.split(','):
        if key not in models: raise SystemExit(f"unknown model {key!r}: use some of {', '.join(models)}")
        name, make = models[key]
        print(bench(name, make(), x, i, t, a.reps), flush=True)
    print(f"\n(per slice = per input sample of the batch, which holds 2 target images; matmul peak {peak:.1f} GFLOP/s)")

if __name__ == '__main__': main()
