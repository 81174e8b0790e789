"""The compute budget of Med-K2N against the U-Net it must beat (not a test; SPEC §3.11): per slice of a
2 → 2 task (t1n,t2w → t1c,t2f), for the `cpu` preset at 128 px and the `paper` preset at 256 px,

- FLOPs of one training step, forward + backward (torch.utils.flop_counter: matmuls and convolutions;
  its grouped-convolution weight gradient is counted as it is computed, see `conv_backward_flop`);
- the wall time of one training step on this machine (model, `K2NLoss`, AdamW; float32 and bf16 autocast),
  the two models interleaved rep by rep so that a noisy shared machine slows both alike (cpu preset;
  `--paper-time` adds the paper preset);
- the peak memory of a training step per slice: how far the second training step of `--bs` slices raises the
  process's peak RSS over its RSS before that step, in a fresh process per model with glibc's mmap threshold
  fixed at 128 kB so that freed activations leave the RSS (CPU); `torch.cuda.max_memory_allocated` on a GPU.

    python bench/budget.py [--bs 8] [--reps 5] [--amp none,bf16] [--before DIR] [--device cuda] [--compile]

`--before DIR` runs the same measurements with the med_k2n package of another checkout (e.g. a `git worktree`
of the commit before a change) in a subprocess and prints after/before ratios. On a GPU (`--device cuda`) the
paper preset is timed at 256 px, bs 16, bf16, as the issue's ≥ 150 slices/s asks; `--compile` also times
`torch.compile`d models. Prints Markdown tables.
"""
import argparse, json, os, resource, subprocess, sys, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

TASK = 't1n,t2w->t1c,t2f'
ROWS = {'medk2n-cpu': ('medk2n_cpu', 128), 'unet-cpu': ('unet_cpu', 128),
        'medk2n-paper': ('medk2n_paper', 256), 'unet-paper': ('unet_paper', 256)}

def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    "FLOPs of a convolution's backward: the input gradient and the weight gradient each cost the forward's (torch's own formula ignores `groups` for the weight gradient and overcounts a grouped convolution by the group count)"
    return (int(output_mask[0]) + int(output_mask[1])) * conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)

def batch(size, bs, device='cpu'):
    from med_k2n.core import parse_task, modality_set
    ms = modality_set('brats')
    i, t = parse_task(TASK, ms).masks(ms)
    g = torch.Generator().manual_seed(0)
    return (torch.rand(bs, len(ms), size, size, generator=g).to(device),
            torch.tensor([i] * bs, device=device), torch.tensor([t] * bs, device=device))

def build(row, device='cpu'):
    from med_k2n.registry import create_model
    name, size = ROWS[row]
    torch.manual_seed(0)
    return create_model(name, size=size).to(device).train()

def trainer(model, amp, device='cpu'):
    "One training step `step(x, inputs, targets)` of `model`: forward (autocast bf16 if `amp`), K2NLoss, backward, AdamW, running statistics"
    from med_k2n.losses import K2NLoss
    from med_k2n.batch import K2NBatch
    loss_fn, opt = K2NLoss(), torch.optim.AdamW(model.parameters(), 1e-4)
    def step(x, i, t):
        with torch.autocast(device.split(':')[0], dtype=torch.bfloat16, enabled=amp == 'bf16'):
            out = model(x * i[..., None, None], i, t)
        loss = loss_fn(out, K2NBatch(x, i, t, None, i | t))
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if hasattr(model, 'update_running_stats'): model.update_running_stats(out, x, i, t)
    return step

def flops(row) -> float:
    "GFLOPs of one training slice (forward + backward) of `row`"
    m = build(row)
    x, i, t = batch(ROWS[row][1], 2)
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop}) as fc:
        out = m(x * i[..., None, None], i, t)
        (out.images - x).abs()[t].mean().backward()
    return fc.get_total_flops() / 2 / 1e9

def step_times(rows, bs, reps, amp, device='cpu', compile=False) -> dict:
    "Median seconds of one training step of each of `rows`, interleaved rep by rep"
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    steps = {}
    for r in rows:
        m = build(r, device)
        if compile: m = torch.compile(m)
        x, i, t = batch(ROWS[r][1], bs, device)
        s = trainer(m, amp, device)
        for _ in range(3 if compile else 2): s(x, i, t)   # warm-up (and compilation)
        steps[r] = (s, x, i, t)
    ts = {r: [] for r in rows}
    for _ in range(reps):
        for r, (s, x, i, t) in steps.items():
            sync(); t0 = time.perf_counter(); s(x, i, t); sync(); ts[r].append(time.perf_counter() - t0)
    return {r: sorted(v)[len(v) // 2] for r, v in ts.items()}

def _status_mb(key:str) -> float:
    "A memory figure of this process from /proc/self/status (Linux), in MB"
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    raise KeyError(key)

def reset_peak_rss() -> float:
    "Reset this process's peak RSS to its current RSS (Linux: /proc/self/clear_refs) and return it in MB"
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')
    return _status_mb('VmRSS')

def peak_rss() -> float:
    "Peak RSS of this process since the last `reset_peak_rss`, in MB"
    return _status_mb('VmHWM')

def peak_memory(row, bs, amp, device='cpu') -> float:
    "MB per slice by which one training step of `bs` slices (after a first one) raises the peak memory over the memory before it (CPU: RSS, in a fresh process)"
    if device.startswith('cuda'):
        m = build(row, device); x, i, t = batch(ROWS[row][1], bs, device); s = trainer(m, amp, device)
        s(x, i, t); torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
        s(x, i, t); torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / bs / 2**20
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import budget; "
            f"m = budget.build({row!r}); x, i, t = budget.batch({ROWS[row][1]}, {bs}); s = budget.trainer(m, {amp!r}); "
            f"s(x, i, t); r0 = budget.reset_peak_rss(); s(x, i, t); print((budget.peak_rss() - r0) / {bs})")
    env = {**os.environ, 'MALLOC_MMAP_THRESHOLD_': '131072'}   # large blocks through mmap, so a freed activation leaves the RSS
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.abspath(__file__)))   # not the caller's folder, which may hold another med_k2n
    if out.returncode: raise RuntimeError(f"peak-memory run of {row} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])

def measure(a) -> dict:
    "Every figure of this benchmark for the installed (or PYTHONPATH's) med_k2n, as a dict"
    gpu = a.device.startswith('cuda')
    res = dict(torch=torch.__version__, threads=torch.get_num_threads(),
               device=torch.cuda.get_device_name() if gpu else f'CPU, {torch.get_num_threads()} threads')
    res['gflop'] = {r: flops(r) for r in ROWS}
    res['step_s'] = {}
    for amp in a.amp.split(','):
        if gpu: res['step_s'][amp] = step_times(['medk2n-paper', 'unet-paper', 'medk2n-cpu', 'unet-cpu'], a.bs, a.reps, amp, a.device)
        else: res['step_s'][amp] = step_times(['medk2n-cpu', 'unet-cpu'] + (['medk2n-paper', 'unet-paper'] if a.paper_time else []), a.bs, a.reps, amp)
    if gpu and a.compile: res['step_s']['bf16+compile'] = step_times(['medk2n-paper', 'unet-paper'], a.bs, a.reps, 'bf16', a.device, compile=True)
    amp = a.amp.split(',')[-1]
    res['mem_amp'] = amp
    res['mb_per_slice'] = {r: peak_memory(r, a.bs, amp, a.device) for r in (ROWS if gpu else ('medk2n-cpu', 'unet-cpu', 'medk2n-paper', 'unet-paper'))}
    return res

def report(res, before=None):
    "Markdown tables of `res`, with after/before ratios where `before` (the same figures of another checkout) is given"
    def ratio(*keys):
        if before is None: return ""
        cur, prev = res, before
        for k in keys: cur, prev = cur[k], (prev or {}).get(k)
        return f" | {cur / prev:.2f}×" if prev and cur else " | –"
    hb, sep = (" | after / before", "---|") if before else ("", "")
    unet = lambda r: 'unet-' + r.split('-')[1]
    print(f"torch {res['torch']}, {res['device']}; task {TASK}; per slice = per input sample (2 target images)\n")
    print(f"| FLOPs (fwd + bwd) | GFLOP / slice | × U-Net of the preset{hb} |\n|---|---|---|{sep}")
    for r, v in res['gflop'].items(): print(f"| {r} @ {ROWS[r][1]} px | {v:.1f} | {v / res['gflop'][unet(r)]:.2f}{ratio('gflop', r)} |")
    for amp, st in res['step_s'].items():
        print(f"\n| training step, {amp}, bs {res['bs']} | ms / step | slices / s | × U-Net's time{hb} |\n|---|---|---|---|{sep}")
        for r, v in st.items(): print(f"| {r} @ {ROWS[r][1]} px | {v * 1e3:.0f} | {res['bs'] / v:.1f} | {v / st[unet(r)]:.2f}{ratio('step_s', amp, r)} |")
    print(f"\n| peak memory of a training step ({res['mem_amp']}, bs {res['bs']}) | MB / slice | × U-Net{hb} |\n|---|---|---|{sep}")
    for r, v in res['mb_per_slice'].items():
        u = res['mb_per_slice'][unet(r)]
        print(f"| {r} @ {ROWS[r][1]} px | {v:.0f} | {f'{v / u:.2f}' if u > 0 else '–'}{ratio('mb_per_slice', r)} |")

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--bs', type=int, default=None, help='slices per step (default 8 on the CPU, 16 on a GPU)')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--amp', default=None, help='comma list of none, bf16 (default: none,bf16 on the CPU, bf16 on a GPU)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--paper-time', action='store_true', help='on the CPU, also time the paper preset at 256 px (slow)')
    p.add_argument('--compile', action='store_true', help='on a GPU, also time torch.compile')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--before', default=None, help='a checkout whose med_k2n to measure as well, for after/before ratios')
    p.add_argument('--json', default=None, help='write the figures to this JSON file')
    a = p.parse_args(argv)
    gpu = a.device.startswith('cuda')
    a.bs = a.bs or (16 if gpu else 8)
    a.amp = a.amp or ('bf16' if gpu else 'none,bf16')
    if a.threads: torch.set_num_threads(a.threads)
    before = None
    if a.before:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            args = [x for x in (argv if argv is not None else sys.argv[1:])]
            k = args.index('--before'); del args[k:k + 2]
            env = {**os.environ, 'PYTHONPATH': os.path.abspath(a.before) + os.pathsep + os.environ.get('PYTHONPATH', '')}
            subprocess.run([sys.executable, os.path.abspath(__file__), *args, '--json', f'{d}/before.json'], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            before = json.load(open(f'{d}/before.json'))
        print(f"(before: med_k2n of {a.before})")
    res = measure(a); res['bs'] = a.bs
    if a.json: json.dump(res, open(a.json, 'w'), indent=1)
    report(res, before)

if __name__ == '__main__': main()
