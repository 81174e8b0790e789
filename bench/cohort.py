"""Cohort synthesis throughput: `med-k2n synth --data` on a phantom cohort (one sequence missing per subject), timed
from the shell as a user runs it, on 1 and 2 processes (torchrun; gloo on the CPU) and with 0 or 1 reader process
each; on a GPU, one process per GPU with the paper and the cpu preset. Prints one Markdown table: subjects per hour
over the whole command (start-up included) and inside the run, and how the time splits between reading,
preprocessing, the model and writing (seconds summed over the subjects and processes, from the run's summary).

    OMP_NUM_THREADS=1 python bench/cohort.py --subjects 16 --size 128 --model-size 64
    python bench/cohort.py --gpu-only --size 240 --depth 155         # on a GPU machine: the paper and cpu presets
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    "The CPU model from /proc/cpuinfo (the platform's processor name elsewhere)"
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or 'unknown CPU'


def make_cohort(root:Path, subjects:int, size:int, depth:int|None, seed:int=0) -> Path:
    "A phantom cohort in the BraTS layout, one of the four sequences removed from each subject (seeded)"
    import numpy as np
    from med_k2n.phantom import write_phantom_dataset
    data = root/'data'
    write_phantom_dataset(data, subjects=subjects, size=size, depth=depth, seed=seed, progress=False, workers=0)
    rng, ms = np.random.default_rng(seed), ('t1n', 't1c', 't2w', 't2f')
    for s in sorted(data.iterdir()): (s/f'{s.name}-{ms[rng.integers(4)]}.nii.gz').unlink()
    return data


def make_model(root:Path, preset:str, size:int) -> Path:
    "An untrained Med-K2N of `preset` at `size` px, saved as a checkpoint (throughput does not depend on the weights)"
    import torch
    from med_k2n.learner import save_model
    from med_k2n.model import MedK2N
    torch.manual_seed(0)
    out = root/f'model-{preset}-{size}'
    save_model(MedK2N.from_preset(preset, size=size), out)
    return out


def run(data:Path, model:Path, out:Path, procs:int, workers:int, bs:int, device:str|None, threads:int) -> dict:
    "One `med-k2n synth --data` command, timed; its summary's counts, in-run seconds and stage seconds"
    args = ['synth', '--data', str(data), '--model', str(model), '--out', str(out), '--workers', str(workers), '--bs', str(bs)]
    if device: args += ['--device', device]
    py = [sys.executable, '-m', 'med_k2n']
    cmd = py + args if procs == 1 else [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(procs),
                                        '--no-python', *py, *args]
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads), 'PYTHONWARNINGS': 'ignore',
           'HF_HUB_OFFLINE': '1', 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0: raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    s = json.loads((out/'synth_summary.json').read_text())
    return dict(done=s['done'], wall=wall, run=s['seconds'], stages=s['stage_seconds'])


def row(label:str, res:dict) -> str:
    st = res['stages']
    tot = sum(st.values()) or 1.
    split = ' | '.join(f"{st[k]:.1f} ({100 * st[k] / tot:.0f} %)" for k in ('read_s', 'preprocess_s', 'model_s', 'write_s'))
    return (f"| {label} | {res['done']} | {res['wall']:.1f} | {3600 * res['done'] / res['wall']:.0f} | "
            f"{3600 * res['done'] / max(res['run'], 1e-9):.0f} | {split} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--subjects', type=int, default=16, help='subjects in the phantom cohort')
    p.add_argument('--size', type=int, default=128, help='in-plane voxels of the phantom volumes')
    p.add_argument('--depth', type=int, default=None, help='axial slices (default: size * 155 / 240)')
    p.add_argument('--model-size', type=int, default=64, help='slice size of the cpu-preset model on the CPU')
    p.add_argument('--bs', type=int, default=16, help='slices per forward pass')
    p.add_argument('--threads', type=int, default=1, help='OMP threads per process')
    p.add_argument('--gpu-only', action='store_true', help='only the GPU rows')
    p.add_argument('--keep', default=None, help='keep the cohort and outputs in this folder')
    a = p.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix='bench_cohort_'))
    root.mkdir(parents=True, exist_ok=True)
    import torch
    try:
        t = time.perf_counter()
        data = make_cohort(root, a.subjects, a.size, a.depth)
        print(f"cohort: {a.subjects} phantom subjects, {a.size} px, one sequence missing each ({time.perf_counter() - t:.0f} s to write); "
              f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}", flush=True)
        lines = ['| run | subjects | wall s | subjects/h (wall) | subjects/h (in run) | read s | preprocess s | model s | write s |',
                 '|---|---|---|---|---|---|---|---|---|']
        k = 0
        def go(label, model, procs, workers, device=None, bs=a.bs):
            nonlocal k
            k += 1
            res = run(data, model, root/f'out{k}', procs, workers, bs, device, a.threads)
            lines.append(row(label, res)); print(lines[-1], flush=True)
        if not a.gpu_only:
            m = make_model(root, 'cpu', a.model_size)
            for procs, workers in ((1, 0), (1, 1), (2, 0), (2, 1)):
                go(f"CPU, cpu preset {a.model_size} px, {procs} process{'es (torchrun, gloo)' if procs > 1 else ''}, {workers} reader{'s' if workers != 1 else ''} each, "
                   f"{a.threads} thread{'s' if a.threads > 1 else ''}", m, procs, workers, 'cpu')
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            for preset, size in (('paper', None), ('cpu', None)):
                m = make_model(root, preset, size)
                from med_k2n.registry import load_model
                sz = load_model(m, device='cpu').size
                for procs in sorted({1, n}):
                    go(f"{torch.cuda.get_device_name(0)} ×{procs}, {preset} preset {sz} px, bf16, 2 readers", m, procs, 2, None, 64)
        print('\n'.join(lines))
    finally:
        if not a.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
