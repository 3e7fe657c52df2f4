#!/usr/bin/env bash
# Installs LLVM 22 (the CPU backend links it through inkwell; llvm-ar packs static archives) and
# a C compiler (links the executables and shared libraries pare compile emits), from Debian
# packages, when they are missing. Needs root or sudo the first time.
set -euo pipefail
if [ ! -x /usr/lib/llvm-22/bin/llvm-config ] || ! command -v cc >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    llvm-22-dev libpolly-22-dev gcc libc6-dev zlib1g-dev libzstd-dev libffi-dev libxml2-dev >/dev/null
fi
