"""Before / after (not a test): one model's scores in two runs of `bench/quality.py` on the same data and seed
(e.g. before and after a refactor), per pattern side by side, with the paired Wilcoxon test over subjects.

    python bench/compare_runs.py BEFORE_DIR AFTER_DIR [--model Med-K2N] [--metric psnr]

Each DIR is a `bench/quality.py --out` folder (its results.csv). Prints a Markdown table: per pattern the mean
of each run, the difference (after - before) and its p, then the pooled row over (subject, pattern); the same for
the brain-masked metric, and the training speed each run's runs.json records.
"""
import argparse, json
from pathlib import Path
import pandas as pd
from med_k2n.evaluate import wilcoxon

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('before'); p.add_argument('after')
    p.add_argument('--model', default='Med-K2N', help="the model column's value in both results.csv")
    p.add_argument('--metric', default='psnr', help='psnr, ssim, psnr_brain or ssim_brain')
    a = p.parse_args(argv)
    runs = [pd.read_csv(Path(d)/'results.csv') for d in (a.before, a.after)]
    runs = [r[r.model == a.model] for r in runs]
    if any(r.empty for r in runs): raise SystemExit(f"no rows of model {a.model!r} in one of the runs")
    for metric in dict.fromkeys([a.metric, a.metric + '_brain' if not a.metric.endswith('_brain') else a.metric]):
        w = wilcoxon(runs[1], runs[0], metric)
        print(f"\n### {a.model}, {metric}: after (`{a.after}`) vs before (`{a.before}`)\n")
        print("| pattern | before | after | after − before | p |\n|---|---|---|---|---|")
        for _, r in w.iterrows():
            print(f"| {r['available']} | {r['mean_b']:.2f} | {r['mean_a']:.2f} | {r['diff']:+.2f} | {r['p']:.3g} |")
    print("\n| run | train s | slices/s | steps |\n|---|---|---|---|")
    for d in (a.before, a.after):
        f = Path(d)/'runs.json'
        if not f.exists(): continue
        for r in json.loads(f.read_text())['runs']:
            if r['model'] == a.model: print(f"| {d} | {r['train_seconds']:.0f} | {r['slices_per_second']:.2f} | {r['steps']} |")

if __name__ == '__main__': main()
