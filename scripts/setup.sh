#!/usr/bin/env bash
# Installs what pare's tests and demo need on a fresh machine, and fetches test data:
# the Python fixture tools (onnx, onnxruntime, numpy), the ONNX node tests, the real models.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "error: cargo not found; install Rust (rustup) first" >&2; exit 1; }
./scripts/setup_llvm.sh
export LLVM_SYS_221_PREFIX=/usr/lib/llvm-22
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
./scripts/fetch_conformance.sh
python3 scripts/fetch_models.py
