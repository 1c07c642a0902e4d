#!/usr/bin/env bash
# Build (once) and install mmcv 2.1.0 with its compiled ops into the active Python.
#
# Why by hand: PyPI has no mmcv 2.1.0 wheel for current torch; an isolated pip build does not see
# torch and silently drops the ops ("Skip building ext ops"); and torch >= 2.14 headers need C++20
# while mmcv's setup.py forces -std=c++17. We build the sdist with --no-build-isolation and C++20,
# and keep the wheel in a cache keyed by torch version and CUDA flavour so only the first install
# on a machine pays (~12 min on 2 cores).
set -euo pipefail
PY=${PYTHON:-python}
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
CACHE_ROOT=${POSE_DATA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/follow-your-pose/wheels}

torch_tag=$("$PY" -c "import torch; print(torch.__version__.replace('+','_'))")
if [ "${FORCE_CUDA:-}" = "1" ] || { command -v nvcc >/dev/null 2>&1 && "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; }; then
  flavour=cuda; export FORCE_CUDA=1
else
  flavour=cpu; export FORCE_CUDA=0
fi
wheel_dir="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch$torch_tag-$flavour"

if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  echo "[build_mmcv] building mmcv $MMCV_VERSION with ops ($flavour, torch $torch_tag) into $wheel_dir; this takes ~10-15 min once"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$work"
  tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
  src="$work/mmcv-$MMCV_VERSION"
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  mkdir -p "$wheel_dir.tmp"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip wheel --no-deps --no-build-isolation "$src" -w "$wheel_dir.tmp"
  rm -rf "$wheel_dir"; mv "$wheel_dir.tmp" "$wheel_dir"   # atomic: a killed build leaves no wheel behind
fi
wheel=$(ls "$wheel_dir"/mmcv-*.whl | head -1)
# an isolated build silently drops the ops: refuse a wheel without the compiled extension
if ! "$PY" -c "import sys, zipfile; sys.exit(0 if any(n.startswith('mmcv/_ext') for n in zipfile.ZipFile(sys.argv[1]).namelist()) else 1)" "$wheel"; then
  echo "[build_mmcv] ERROR: $wheel has no compiled ops (mmcv/_ext*.so); delete $wheel_dir and re-run" >&2
  exit 1
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$wheel"
echo "[build_mmcv] installed $(basename "$wheel") (with compiled ops) from $wheel_dir"
