#!/usr/bin/env bash
# Fetch the ONNX backend node conformance tests shipped inside the onnx wheel.
#
# Downloads onnx==$ONNX_VERSION with pip and unpacks only
# onnx/backend/test/data/node/ into .cache/onnx-node/, giving
#   .cache/onnx-node/<test>/model.onnx
#   .cache/onnx-node/<test>/test_data_set_*/{input,output}_*.pb
# Also writes crates/onnx/proto/onnx.proto from the same wheel if that file is missing.
# Idempotent: skipped when .cache/onnx-node/.stamp names the same version.
# Needs only python3 + pip (and the registry). Usage: scripts/fetch_conformance.sh [--force]
set -euo pipefail

ONNX_VERSION="${ONNX_VERSION:-1.22.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.cache/onnx-node"
STAMP="$DEST/.stamp"
PROTO="$ROOT/crates/onnx/proto/onnx.proto"

die() { echo "fetch_conformance: error: $*" >&2; exit 1; }

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "onnx==$ONNX_VERSION" ]]; then
    echo "fetch_conformance: onnx==$ONNX_VERSION node tests already in $DEST ($(find "$DEST" -mindepth 1 -maxdepth 1 -type d | wc -l) tests); use --force to refetch"
    exit 0
fi

command -v python3 >/dev/null || die "python3 not found"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch_conformance: downloading onnx==$ONNX_VERSION wheel ..."
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 \
    "onnx==$ONNX_VERSION" -d "$TMP" \
    || die "pip download of onnx==$ONNX_VERSION failed (is the package registry reachable?)"
WHEEL="$(ls "$TMP"/onnx-*.whl 2>/dev/null | head -n1)"
[[ -n "$WHEEL" ]] || die "no onnx wheel found after pip download"

python3 - "$WHEEL" "$DEST" "$PROTO" "$ONNX_VERSION" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest, proto, version = sys.argv[1:]
prefix = "onnx/backend/test/data/node/"
tmp = dest + ".partial"
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"fetch_conformance: error: {prefix} not found in {wheel}")
    for n in names:
        out = os.path.join(tmp, n[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with zf.open(n) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if not os.path.exists(proto):
        os.makedirs(os.path.dirname(proto), exist_ok=True)
        with zf.open("onnx/onnx.proto") as src, open(proto, "wb") as dst:
            shutil.copyfileobj(src, dst)
        print(f"fetch_conformance: wrote {proto}")
shutil.rmtree(dest, ignore_errors=True)
os.rename(tmp, dest)
tests = sum(os.path.isfile(os.path.join(dest, d, "model.onnx")) for d in os.listdir(dest))
with open(os.path.join(dest, ".stamp"), "w") as f:
    f.write(f"onnx=={version}")
print(f"fetch_conformance: unpacked {tests} node tests ({len(names)} files) into {dest}")
EOF
