"""Benchmark of the phantom generator on this machine (not a test): the acceptance command
`med-k2n phantom --out D --subjects 20 --size 128` in a fresh process, once with one worker and once with
one per core, side by side, and where one subject's time goes (template loading, anatomy, imaging, writing).

    python bench/phantom.py [--subjects 20] [--size 128]

Prints two Markdown tables.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')

def cli(out, subjects, size, workers):
    "Wall time of `med-k2n phantom` in a fresh process (imports and template loading included)"
    exe = shutil.which('med-k2n')
    cmd = ([exe] if exe else [sys.executable, '-m', 'med_k2n.cli']) + ['phantom', '--out', str(out), '--subjects', str(subjects),
                                                                       '--size', str(size), '--workers', str(workers)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise SystemExit(r.stderr)
    return time.perf_counter() - t

def stages(size):
    "Seconds of each stage of one subject in this process: loading the templates (cold), the anatomy maps, one subject, writing it"
    import numpy as np
    from med_k2n import phantom as P
    out = {}
    t = time.perf_counter(); P._mni152(); out['load the MNI152 templates (once per process)'] = time.perf_counter() - t
    t = time.perf_counter(); P._anatomy_maps(round(240 / size, 4)); out['derive the anatomy maps (once per process and voxel size)'] = time.perf_counter() - t
    P.make_phantom(0, size=size)   # warm
    ts = []
    for s in (1, 2, 3):
        t = time.perf_counter(); ph = P.make_phantom(s, size=size); ts.append(time.perf_counter() - t)
    out['make_phantom, 4 series (median of 3)'] = float(np.median(ts))
    t = time.perf_counter()
    for m, v in ph.images.items(): P._nifti_bytes(v, ph.affine, 'bench')
    P._nifti_bytes(ph.seg, ph.affine, 'bench')
    out['NIfTI + gzip of 5 files'] = time.perf_counter() - t
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--subjects', type=int, default=20); p.add_argument('--size', type=int, default=128)
    a = p.parse_args()
    n_cpu = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in (1, 0):
            dt = cli(os.path.join(tmp, f'w{w}'), a.subjects, a.size, w)
            rows.append((w or n_cpu, dt))
    print(f"`med-k2n phantom --subjects {a.subjects} --size {a.size}` on {n_cpu} CPU cores\n")
    print("| processes | wall s | s per subject | speed-up |")
    print("|---|---|---|---|")
    for w, dt in rows: print(f"| {w} | {dt:.1f} | {dt / a.subjects:.2f} | {rows[0][1] / dt:.2f}× |")
    print("\nOne subject, one process:\n")
    print("| stage | s |")
    print("|---|---|")
    for k, v in stages(a.size).items(): print(f"| {k} | {v:.2f} |")

if __name__ == '__main__':
    main()
