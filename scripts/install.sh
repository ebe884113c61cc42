#!/usr/bin/env bash
# Install everything hf_lottery_verify needs on a fresh Debian/Ubuntu machine:
#   - system packages: libzbar0 (pyzbar's QR reader) and dataset-fashion-mnist (real data, offline)
#   - a virtual environment at .venv in the repository root with the package and its test tools
# Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=0
ldconfig -p 2>/dev/null | grep -q "libzbar.so.0" || need_apt=1
[ -d /usr/share/datasets/fashion-mnist ] || need_apt=1
if [ "$need_apt" -eq 1 ]; then
  echo "[install] apt-get: libzbar0 dataset-fashion-mnist"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libzbar0 dataset-fashion-mnist >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "[install] pip install -e .[test] (torch 2.14.1 and torchvision 0.29.1 come from the local disk)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "[install] done: $(.venv/bin/hf-lottery --version)"
