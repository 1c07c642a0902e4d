#!/usr/bin/env bash
# Set up (or update) the project's virtual environment: one command, from a bare Python 3.11.
#
#   bash scripts/setup.sh            # creates .venv with torch, the MMPose stack, MediaPipe, Ray, ...
#
# Environment knobs:
#   PYTHON=python3.11   the interpreter that creates the venv (default: python3)
#   VENV=.venv          where the venv goes
#   SKIP_APT=1          do not apt-get the browser the app's browser test drives (chromium, chromium-driver)
#   TORCH_SPEC="..."    the torch pair to install when the venv has none
#                       (default "torch==2.14.1 torchvision==0.29.1"; on a CUDA machine you may
#                       install your own torch into the venv first: an importable torch is kept)
# torch is installed first and then pinned to the installed version for every later pip call, so
# no dependency can pull another multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
step() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $(${PYTHON:-python3} --version)"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_q() { "$PY" -m pip install -q "$@"; }

pip_q -U pip "setuptools<81" wheel ninja
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  step "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  pip_q $TORCH_SPEC
fi
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
"$PY" - >"$pins" <<'PYEOF'
from importlib.metadata import version
print(f"torch=={version('torch')}\ntorchvision=={version('torchvision')}")
PYEOF
cat constraints.txt >>"$pins"
step "torch $(head -1 "$pins" | cut -d= -f3) kept; installing numpy<2 before building mmcv"
pip_q -c "$pins" "numpy<2"
PYTHON="$PY" bash scripts/build_mmcv.sh
step "installing the project and its dependencies (with the dev and app extras: pytest, selenium, Gradio)"
pip_q -c "$pins" -e ".[dev,app]"
# mmpose without its declared deps: `chumpy` neither builds nor is imported; the packages mmpose
# really imports are dependencies of this project (pyproject.toml).
pip_q -c "$pins" --no-deps "mmpose==1.3.2"
# Test-only reference for the openpose_full renderer: tests/test_skeleton_openpose_full.py reads
# controlnet_aux/dwpose/util.py out of this wheel. Never installed or imported as a package (the dev
# extra pins controlnet_aux 0.0.1 for the classic openpose test).
REFERENCE_WHEELS=.cache/reference-wheels
REFERENCE_WHEEL=$REFERENCE_WHEELS/controlnet_aux-0.0.10-py3-none-any.whl
REFERENCE_SHA256=cad3480d62c7df1ae569258a659c88d730873323d2adbb9f6f7aebd87917df3b
if [ ! -f "$REFERENCE_WHEEL" ]; then
  step "downloading the controlnet_aux 0.0.10 wheel (test reference) to $REFERENCE_WHEELS"
  "$PY" -m pip download -q --no-deps controlnet_aux==0.0.10 -d "$REFERENCE_WHEELS"
fi
if ! "$PY" -c "import hashlib, sys; sys.exit(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest() != sys.argv[2])" \
    "$REFERENCE_WHEEL" "$REFERENCE_SHA256"; then
  echo "[setup] ERROR: $REFERENCE_WHEEL does not have the sha256 $REFERENCE_SHA256; removed it, run setup again" >&2
  rm -f "$REFERENCE_WHEEL"
  exit 1
fi
# The browser for tests/test_app_browser.py: Debian's chromium + chromium-driver (selenium drives them; nothing is
# downloaded at test time). Needs apt and root (or password-less sudo); without them the step is skipped, and the
# browser test then skips too (or fails, under CI=1). A failed apt-get is a warning, and an error under CI=1.
if [ "${SKIP_APT:-0}" = 1 ]; then
  step "SKIP_APT=1: not installing chromium / chromium-driver (the browser test will skip, or fail under CI)"
elif command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  step "chromium and chromedriver found ($(chromium --version 2>/dev/null | head -1))"
elif ! command -v apt-get >/dev/null; then
  step "no apt-get here: install Chromium and its chromedriver yourself for the browser test (it skips without them)"
else
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
  fi
  if [ "$SUDO" = none ]; then
    step "not root and no password-less sudo: skipping apt-get install chromium chromium-driver (the browser test will skip)"
  else
    step "apt-get install chromium chromium-driver (for the app's browser test)"
    apt_q() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@" >/dev/null; }
    if ! { apt_q install chromium chromium-driver || { apt_q update && apt_q install chromium chromium-driver; }; }; then
      if [ "${CI:-}" = 1 ] || [ "${CI:-}" = true ]; then
        echo "[setup] ERROR: apt-get install chromium chromium-driver failed (CI is set: the browser test must run)" >&2
        exit 1
      fi
      echo "[setup] WARNING: apt-get install chromium chromium-driver failed; continuing (the browser test will skip)" >&2
    fi
  fi
fi
problems=$("$PY" -m pip check 2>&1 | grep -v -i "chumpy" | grep -v "^No broken requirements" || true)
if [ -n "$problems" ]; then
  echo "[setup] ERROR: pip check found broken requirements:" >&2
  echo "$problems" >&2
  exit 1
fi
"$PY" - <<'PYEOF'
import mmcv.ops, mmdet.apis, mmpose.apis, mediapipe, ray, img2dataset, webdataset, torch, numpy, gradio, selenium
print(f"[setup] ok: torch {torch.__version__}, numpy {numpy.__version__}, mmpose + mmdet + mmcv.ops, mediapipe {mediapipe.__version__}, ray {ray.__version__}, gradio {gradio.__version__}")
PYEOF
