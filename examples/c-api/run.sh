#!/bin/sh
# Builds main.c against a compiled model shared object and runs it.
#   ./run.sh path/to/libmodel.so [prefix] [threads]
# prefix: the symbol prefix the model was compiled with (default pare_model).
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 path/to/libmodel.so [prefix] [threads]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
so=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
prefix=${2:-pare_model}
threads=${3:-0}
out=${TMPDIR:-/tmp}/pare_c_api_demo_$$
${CC:-cc} -std=c11 -O2 -Wall -Wextra -I"$here" -DPARE_PREFIX="$prefix" "$here/main.c" "$so" \
    -Wl,-rpath,"$(dirname "$so")" -o "$out"
status=0
"$out" "$threads" || status=$?
rm -f "$out"
exit $status
