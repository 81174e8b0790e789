"""The README's demo figure: `python tools/readme_figure.py` (training dominates: minutes on one quiet CPU thread).

What `med-k2n demo` does, at a display size fit for the README: a realistic-phantom dataset (BraTS 2023
layout), a short training of the `cpu` preset, synthesis of every missing modality of a held-out
(test-split) subject from T1n + T2-FLAIR, and one figure of the result — the inputs, the synthesised
targets, the ground truth, |error| and the predicted-error (quality) map — drawn by
`med_k2n.inference.show_synthesis`. The phantom is written at `--phantom-size` px (128: the panels show
128 × 128 voxels); the model trains on slices of `--size` px (64, so that it trains in minutes on a CPU)
and its outputs are resampled onto the subject's 128 px grid, as `synthesize` does for any input grid.
Writes `nbs/images/demo_result.png` (referenced from README.md and nbs/index.ipynb) and prints the scores."""
import argparse, os, time, warnings
from pathlib import Path

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='/tmp/med_k2n_readme_figure', help='working folder (phantom, slice cache, model)')
    p.add_argument('--png', default=str(Path(__file__).resolve().parents[1]/'nbs'/'images'/'demo_result.png'))
    p.add_argument('--subjects', type=int, default=8)
    p.add_argument('--phantom-size', type=int, default=128)
    p.add_argument('--size', type=int, default=64, help='model slice size')
    p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--dpi', type=int, default=96, help='2-inch panels: 96 dpi gives about 150 px each')
    p.add_argument('--reuse', action='store_true', help='reuse the model already trained in --out (redraw only)')
    a = p.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import torch; torch.set_num_threads(a.threads)
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    warnings.filterwarnings('ignore', message='.*torch.jit.script.*')
    from med_k2n.phantom import write_phantom_dataset
    from med_k2n.learner import train
    from med_k2n.inference import load_model, synthesize, show_synthesis
    from med_k2n.data import SliceCache
    from med_k2n.demo import _truth, volume_metrics, metrics_table
    from med_k2n import io as kio
    out = Path(a.out); t0 = time.time()
    data = out/'phantom'
    if not data.is_dir() or not any(data.iterdir()):
        write_phantom_dataset(data, subjects=a.subjects, size=a.phantom_size, seed=a.seed, progress=False)
    print(f"phantom: {a.subjects} subjects at {a.phantom_size} px ({time.time()-t0:.0f} s)", flush=True)
    t1 = time.time()
    if not (a.reuse and (out/'model'/'model.safetensors').exists()):
        train(data, out/'model', preset='cpu', size=a.size, epochs=a.epochs, bs=8, seed=a.seed, progress=False)
        print(f"trained the cpu preset at {a.size} px for {a.epochs} epochs in {time.time()-t1:.0f} s", flush=True)
    model = load_model(out/'model')
    test = SliceCache.open(model.meta['cache']).splits['test'][0]
    case = next(c for c in kio.find_cases(data) if c.subject == test)
    res = synthesize(case, 'missing', model, inputs=('t1n', 't2f'), progress=False)
    truth, mask, vols = _truth(case, res['targets'])
    print(metrics_table(volume_metrics(res, truth, mask)))
    truth_stored = {t: kio.image_like(v, vols.reference).get_fdata() for t, v in truth.items()}
    fig = show_synthesis(res, inputs={m: case.paths[m] for m in res['inputs']}, truth=truth_stored)
    fig.suptitle(f"held-out phantom subject {test}: {' + '.join(res['inputs'])} → {', '.join(res['targets'])} "
                 f"(cpu preset, {a.size} px model, {a.epochs} epochs on {a.subjects} subjects; |error| and predicted error 0–0.3)", fontsize=8)
    fig.tight_layout()
    png = Path(a.png); png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=a.dpi, format='png'); plt.close(fig)
    print(f"wrote {png} ({png.stat().st_size/1024:.0f} kB) in {time.time()-t0:.0f} s")

if __name__ == '__main__': main()
