"""Benchmark of volume inference on this machine (not a test): seconds per BraTS-sized volume
(240 x 240 x 155, a physics phantom written with a BraTS-like LPS affine) through `med_k2n.inference.synthesize`,
all missing targets from one or two inputs, for the `cpu` MedK2N preset and the U-Net baseline (untrained
weights: the time does not depend on them), with the slices per second of the model part and the ratio.

    python bench/inference.py [--threads 0] [--bs 16] [--tasks t1n,t2f t1n] [--models medk2n,unet]

Prints one Markdown table. `--threads 0` keeps torch's default thread count. Times include loading the
in-memory volumes, the foreground mask and normalisation, slicing, the model, and the way back to the
volume grid (everything `synthesize` does), but not writing files.
"""
import argparse, os, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import nibabel as nib
import torch
from med_k2n.phantom import make_phantom
from med_k2n.model import MedK2N
from med_k2n.baseline import UNetBaseline
from med_k2n.inference import synthesize


def volumes(seed=1):
    "A 240x240x155 phantom (t1n, t1c, t2w, t2f) as LPS NIfTI images in memory"
    ph = make_phantom(seed, size=240, depth=155)
    aff = np.diag([-1., -1., 1., 1.]) @ ph.affine
    return {m: nib.Nifti1Image(v[::-1, ::-1].copy(), aff) for m, v in ph.images.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--threads', type=int, default=0); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--tasks', nargs='+', default=['t1n,t2f', 't1n'], help='input sets; targets: all the others')
    p.add_argument('--models', default='medk2n,unet')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.time(); imgs = volumes(); t_ph = time.time() - t0
    models = {'medk2n': ('MedK2N cpu preset (128 px)', lambda: MedK2N.from_preset('cpu')),
              'unet': ('U-Net baseline cpu preset (128 px)', lambda: UNetBaseline.from_preset('cpu'))}
    rows, secs = [], {}
    for key in a.models.split(','):
        name, make = models[key]
        model = make().eval()
        for task in a.tasks:
            ins = task.split(',')
            t0 = time.time()
            res = synthesize({m: imgs[m] for m in ins}, 'missing', model, bs=a.bs, progress=False, device='cpu')
            dt = time.time() - t0
            ref = imgs[ins[0]]
            for t, im in res['images'].items():   # the acceptance checks, at full size
                assert im.shape == ref.shape == (240, 240, 155) and np.allclose(im.affine, ref.affine)
                assert np.isfinite(im.get_fdata()).all()
            if key == 'medk2n': assert set(res['quality']) == set(res['targets'])
            secs[key, task] = dt
            rows.append((name, f"{'+'.join(ins)} → {'+'.join(res['targets'])}", res['n_slices'], dt, res['n_slices'] / dt, key, task))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; phantom generated in {t_ph:.0f} s; bs {a.bs}\n")
    print("| model | task | slices run (of 155) | s / volume | slices / s | × U-Net time |")
    print("|---|---|---|---|---|---|")
    for name, task, n, dt, sps, key, tk in rows:
        ratio = dt / secs['unet', tk] if ('unet', tk) in secs else float('nan')
        print(f"| {name} | {task} | {n} | {dt:.1f} | {sps:.2f} | {ratio:.1f} |")


if __name__ == '__main__': main()
