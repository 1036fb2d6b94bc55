#!/usr/bin/env bash
# Idempotent set-up: installs torch==2.11.0 from PyPI into a venv outside the repo and
# points tch at it through the repo-local `.torch` link that .cargo/config.toml reads.
# A second run only checks and returns in seconds.
#
#   CRPO_TORCH_VENV   where the venv lives (default ~/.cache/crpo/torch-2.11.0)
#   CRPO_PYTHON       the python used to create the venv (default python3)
#   CRPO_WITH_TRANSFORMERS=1  also install transformers 5.25.0 (comparison tests, benches;
#                             pinned: the side-by-side figures move with its version)
#   CRPO_WITH_TRL=1           also install TRL 1.16.0 (bench/side_by_side.sh)
#   CRPO_WITH_TENSORBOARD=1   also install tensorboard (a test reads our event files with it)
#   CRPO_WITH_PEFT=1          also install peft 0.21.2 (a test loads our LoRA adapters with it)
#   CRPO_WITH_CHROMIUM=1      also install Debian's chromium (a test opens the HTML report in it)
set -euo pipefail

TORCH_VERSION="2.11.0"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CRPO_TORCH_VENV:-$HOME/.cache/crpo/torch-$TORCH_VERSION}"
python="${CRPO_PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating venv $venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi

# numpy too: torch warns at every import without it.
installed="$("$venv/bin/python" -c 'import numpy, torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ "$installed" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into $venv (about 4.7 GB)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" numpy
fi

if [ "${CRPO_WITH_TRANSFORMERS:-0}" = "1" ] &&
  ! "$venv/bin/python" -c 'import transformers' 2>/dev/null; then
  echo "setup: installing transformers==5.25.0 into $venv"
  "$venv/bin/python" -m pip install --quiet "transformers==5.25.0" "safetensors==0.8.0"
fi

if [ "${CRPO_WITH_PEFT:-0}" = "1" ] &&
  ! "$venv/bin/python" -c 'import peft' 2>/dev/null; then
  echo "setup: installing peft==0.21.2 into $venv"
  "$venv/bin/python" -m pip install --quiet "peft==0.21.2"
fi

if [ "${CRPO_WITH_TENSORBOARD:-0}" = "1" ] &&
  ! "$venv/bin/python" -c 'import tensorboard' 2>/dev/null; then
  echo "setup: installing tensorboard into $venv"
  "$venv/bin/python" -m pip install --quiet tensorboard
fi

if [ "${CRPO_WITH_CHROMIUM:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "setup: installing chromium (apt)"
  sudo_if_needed=""
  [ "$(id -u)" = "0" ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get install -y --no-install-recommends chromium >/dev/null ||
    { $sudo_if_needed apt-get update >/dev/null && $sudo_if_needed apt-get install -y --no-install-recommends chromium >/dev/null; }
fi

if [ "${CRPO_WITH_TRL:-0}" = "1" ] &&
  ! "$venv/bin/python" -c 'import trl' 2>/dev/null; then
  echo "setup: installing trl==1.16.0 into $venv"
  "$venv/bin/python" -m pip install --quiet "trl==1.16.0"
fi

# Distributed training (torch-ext's c10d shim) compiles against libtorch's c10d headers, which
# include gloo's (Debian's libgloo-dev; libtorch itself carries gloo's code) and, on a CUDA
# torch, NCCL's (the nvidia-nccl wheel) and CCCL's (nvidia-cuda-cccl, the CUDA runtime's
# version): headers only, nothing new is linked.
if [ ! -e /usr/include/gloo/config.h ] && [ ! -e /usr/local/include/gloo/config.h ]; then
  echo "setup: installing libgloo-dev (apt) for distributed training on CPU"
  sudo_if_needed=""
  [ "$(id -u)" = "0" ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get install -y --no-install-recommends libgloo-dev >/dev/null ||
    { $sudo_if_needed apt-get update >/dev/null && $sudo_if_needed apt-get install -y --no-install-recommends libgloo-dev >/dev/null; }
fi
cuda_runtime="$("$venv/bin/python" -m pip show nvidia-cuda-runtime 2>/dev/null | sed -n 's/^Version: \([0-9]*\.[0-9]*\).*/\1/p')"
if [ -n "$cuda_runtime" ] && ! "$venv/bin/python" -m pip show nvidia-cuda-cccl >/dev/null 2>&1; then
  echo "setup: installing nvidia-cuda-cccl==$cuda_runtime.* into $venv (headers for NCCL's process group)"
  "$venv/bin/python" -m pip install --quiet "nvidia-cuda-cccl==$cuda_runtime.*"
fi

# The committed .cargo/config.toml sets LIBTORCH to the repo-relative `.torch`, so this link
# is all tch needs, wherever CRPO_TORCH_VENV put the venv.
torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
ln -sfn "$torch_dir" "$repo_root/.torch"
echo "setup: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') ready; .torch -> $torch_dir"

# plugins/python-rewards embeds this venv's python through pyo3: .cargo/config.toml's
# PYO3_PYTHON is `.python/bin/python`. pyo3 links libpython (a shared one): pyenv and
# python.org builds ship it in LIBDIR; Debian's python3 needs libpythonX.Y-dev for the link.
venv_dir="$(cd "$venv" && pwd)"
ln -sfn "$venv_dir" "$repo_root/.python"
libpython="$("$venv/bin/python" -c 'import sysconfig as s; print(s.get_config_var("LIBDIR") + "/" + s.get_config_var("LDLIBRARY"))')"
if [ ! -e "$libpython" ] && ! ldconfig -p | grep -q "$(basename "$libpython")"; then
  dev="libpython$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev"
  echo "setup: installing $dev (apt) for pyo3 to link $(basename "$libpython")"
  sudo_if_needed=""
  [ "$(id -u)" = "0" ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get install -y --no-install-recommends "$dev" >/dev/null ||
    { $sudo_if_needed apt-get update >/dev/null && $sudo_if_needed apt-get install -y --no-install-recommends "$dev" >/dev/null; }
fi
echo "setup: .python -> $venv_dir (pyo3's interpreter, $libpython)"
