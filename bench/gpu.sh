#!/usr/bin/env bash
# Quality benchmark at paper scale on one GPU: the same protocol as bench/quality.py (fixed phantom,
# 16 train / 1 valid / 4 test subjects, Med-K2N vs U-Net vs B0 with equal steps, 14-pattern table,
# Wilcoxon, robustness), at 256 px with the `paper` preset (SAM2 Hiera tiny, mamba_ssm when installed).
# The epochs are chosen by quality.py from the slices/s it measures on the GPU so that the three
# trainings fit MINUTES (default 10, sized for one H100); evaluation and the phantom come on top.
#
#   bench/gpu.sh [extra quality.py options, e.g. --ablation]
#   OUT=/data/q MINUTES=10 SIZE=256 BS=16 PRESET=paper SUBJECTS_TRAIN=16 SUBJECTS_TEST=4 bench/gpu.sh
# LR=… sets one peak learning rate for every model (default: each architecture's, learner.DEFAULT_LR).
# Before the chunked scan and the light heads (issue 33), measured on one H200 (2026-11-27, torch 2.11, mambapy, bf16): training slices/s at 256 px, paper preset, bs 16 —
# Med-K2N 14.2, B0 30.6, U-Net 218 — so the default 10 minutes give two epochs of 2347 slices; the 21-subject
# phantom takes about 2 minutes on 16 cores and the evaluation comes on top (all test slices unless --max-slices).
# Again on one H200 (2026-11-27, HEAD 8fe32b6): probe Med-K2N 15.2, U-Net 186.6, B0 32.2 slices/s. A bare training step
# (model + K2NLoss + AdamW, bf16, bs 16, 256 px) takes 473-507 ms for Med-K2N and B0 alike (32-34 slices/s) with the GPU
# busy about 90 % of it, mostly in elementwise kernels (mul/copy/add/sum; the mambapy scan at 64x64 tokens), and 58 ms for
# the U-Net: the step is bandwidth-bound, not launch-bound.
# Med-K2N's 2x over B0 in those probes and trainings was the order, not the network (H200, 2026-11-27, HEAD 44e5195): a
# batch shape (number of input frames, of pairs) seen for the first time in the process costs about 1 s more (most likely
# cuDNN choosing and building kernels for it; not profiled), e.g. Med-K2N k->1 steps of 3268/1723/646/1520/622 ms where a
# repeated shape takes 600-650 ms; Med-K2N ran first and met every shape first. Run second, it is as fast as B0 (k->1
# median 610 vs 1540 ms when B0 ran first). The probe now takes the median of 3 batches per stage after a warm-up; the
# first model trained still pays the warm-up in its slices/s. `bench/profile_step.py --fresh-tasks 14 --models med,b0`
# (then b0,med) shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PYTHON:-$(command -v python || command -v python3)}   # a CUDA image may have only python3
"$PY" - <<'PY'
import torch, sys
if not torch.cuda.is_available(): sys.exit("bench/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False); use bench/quality.py on CPU")
print("GPU:", torch.cuda.get_device_name(), "| bf16:", torch.cuda.is_bf16_supported())
try:
    import mamba_ssm; print("mamba_ssm", mamba_ssm.__version__, "(CUDA selective scan)")
except ImportError: print("mamba_ssm not installed: the spiral mixer uses the PyTorch chunked scan (slower)")
PY
"$PY" bench/budget.py --device cuda --compile   # the compute budget first: FLOPs, training slices/s (bf16, bs 16), memory
"$PY" bench/quality.py \
  --out "${OUT:-/tmp/med_k2n_quality_gpu}" \
  --preset "${PRESET:-paper}" --size "${SIZE:-256}" \
  --minutes "${MINUTES:-10}" --bs "${BS:-16}" --eval-bs "${EVAL_BS:-64}" ${LR:+--lr "$LR"} \
  --train-subjects "${SUBJECTS_TRAIN:-16}" --valid-subjects "${SUBJECTS_VALID:-1}" --test-subjects "${SUBJECTS_TEST:-4}" \
  --seed "${SEED:-0}" --vlm-minutes "${VLM_MINUTES:-2}" --no-progress "$@"
