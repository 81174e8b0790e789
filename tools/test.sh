#!/usr/bin/env bash
# The test command of the README: on a fresh machine it installs everything, then checks that the
# package is in step with the notebooks and that the notebooks are clean, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"
start=$(date +%s)

echo "== install"
python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e ".[dev]" 2>&1 \
  | grep -v "Running pip as the 'root' user" || true
bin=$(python -c 'import os,sys; print(os.path.dirname(sys.executable))')

echo "== nbdev-export and nbdev-clean must not change tracked files"
before=$(git status --porcelain -- med_k2n nbs)
"$bin/nbdev-export"
"$bin/nbdev-clean"
after=$(git status --porcelain -- med_k2n nbs)
if [ "$before" != "$after" ]; then
  echo "FAIL: the package or the notebooks were out of step; run nbdev-export and nbdev-clean, then commit:"
  git status --porcelain -- med_k2n nbs
  exit 1
fi

echo "== nbdev-test"
"$bin/nbdev-test" --n-workers 2 --timing

echo "== pytest"
python -m pytest tests
echo "== total $(( $(date +%s) - start )) s"
