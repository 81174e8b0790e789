#!/usr/bin/env bash
# Throughput of `med-k2n train` on one process vs two processes (torchrun, gloo/CPU or nccl/GPU).
# Usage: bench/dist_scaling.sh [ARCH] [SIZE] [SUBJECTS] [EPOCHS]   (defaults: unet 64 10 2)
# Prints the slices/s that train reports (fit time only: no start-up, no cache build).
set -euo pipefail
ARCH=${1:-unet}; SIZE=${2:-64}; SUBJ=${3:-10}; EPOCHS=${4:-2}
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1
med-k2n phantom --out "$W/pha" --subjects "$SUBJ" --size "$SIZE" > /dev/null
med-k2n prepare --data "$W/pha" --size "$SIZE" > /dev/null
run() { grep -o '[0-9.]* slices/s' "$1" | head -1; }
OMP_NUM_THREADS=1 med-k2n train --data "$W/pha" --out "$W/a" --size "$SIZE" --arch "$ARCH" --epochs "$EPOCHS" --bs 8 > "$W/a.txt" 2>&1
echo "1 process,  1 thread,  bs 8:            $(run "$W/a.txt")"
OMP_NUM_THREADS=2 med-k2n train --data "$W/pha" --out "$W/b" --size "$SIZE" --arch "$ARCH" --epochs "$EPOCHS" --bs 8 > "$W/b.txt" 2>&1
echo "1 process,  2 threads, bs 8:            $(run "$W/b.txt")"
OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 --no-python med-k2n train --data "$W/pha" --out "$W/c" \
  --size "$SIZE" --arch "$ARCH" --epochs "$EPOCHS" --bs 4 > "$W/c.txt" 2>&1
echo "2 processes, 1 thread each, bs 4 each: $(run "$W/c.txt")"
