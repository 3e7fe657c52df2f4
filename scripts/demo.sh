#!/usr/bin/env bash
# The main job on a bundled real model: fetch it, build pare, inspect it, run it on a fixture
# input, canonicalize it (folding, fusion, layout clean-up) with a report, measure the fidelity of
# the result against the original, check that onnxruntime runs it with the same outputs, then
# compile it to a native executable, check its outputs and time it against onnxruntime; finally
# compress it (static int8 weights and activations by `quantize`, calibrated on two fixture
# sets), measure its fidelity, check that onnxruntime runs it, and compile it to pare's int8
# kernel and time it against the f32 build.
# Usage: scripts/demo.sh [MODEL_NAME]   (a name from tests/models/models.json; default minilm)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-minilm}
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
python3 scripts/fetch_models.py "$name"
./scripts/setup_llvm.sh
cargo build --release -q -p pare-cli
pare=target/release/pare
model=.cache/models/$name.onnx
out=target/demo/$name
mkdir -p "$out"
echo "== pare inspect $model (shapes bound from tests/models/$name/test_data_set_0)"
"$pare" inspect "$model" --inputs "tests/models/$name/test_data_set_0"
echo
echo "== pare run (reference interpreter) on tests/models/$name/test_data_set_0"
"$pare" run "$model" --inputs "tests/models/$name/test_data_set_0" --out "$out/outputs" --print
echo
echo "== pare opt --passes canonicalize (report: $out/$name.opt.md)"
"$pare" ir "$model" > "$out/$name.ir"
"$pare" opt "$model" --passes canonicalize -o "$out/$name.opt.onnx" \
    --report "$out/$name.opt.json" --report-md "$out/$name.opt.md" --time-passes
"$pare" ir "$out/$name.opt.onnx" > "$out/$name.opt.ir"
echo "IR text: $out/$name.ir ($(wc -l < "$out/$name.ir") lines) -> $out/$name.opt.ir ($(wc -l < "$out/$name.opt.ir") lines)"
echo
echo "== pare eval: original vs canonicalized on tests/models/$name"
"$pare" eval "$model" "$out/$name.opt.onnx" --inputs "tests/models/$name" --max-rel-err 1e-5
echo
echo "== onnxruntime on the canonicalized model vs onnxruntime on the original"
python3 scripts/ort_compare.py --rtol 1e-5 "$model=$out/$name.opt.onnx=tests/models/$name"
echo
shape=$(python3 - "$model" "tests/models/$name/test_data_set_0" <<'PY'
import sys, os, onnx
m = onnx.load(sys.argv[1], load_external_data=False)
init = {i.name for i in m.graph.initializer}
names = [i.name for i in m.graph.input if i.name not in init]
dims = []
for k in range(len(names)):
    t = onnx.TensorProto(); t.ParseFromString(open(os.path.join(sys.argv[2], f"input_{k}.pb"), "rb").read())
    dims.append("x".join(map(str, t.dims)))
print(",".join(f"{n}={d}" for n, d in zip(names, dims)))
PY
)
echo "== pare compile --emit exe --shape $shape (native code for this CPU)"
"$pare" compile "$out/$name.opt.onnx" --shape "$shape" --emit exe -o "$out/$name.exe"
"$out/$name.exe" --inputs "tests/models/$name/test_data_set_0" --out "$out/compiled"
python3 - "$out/outputs" "$out/compiled" <<'PY'
import sys, glob, os
import numpy as np
worst = 0.0
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.npy"))):
    a = np.load(f); b = np.load(os.path.join(sys.argv[2], os.path.basename(f)))
    err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() / max(np.abs(a).max(), 1e-6))
    worst = max(worst, err)
    print(f"  {os.path.basename(f)}: max|compiled - interpreter| / scale = {err:.2e}")
sys.exit(0 if worst <= 1e-4 else "compiled outputs differ from the interpreter")
PY
echo "== timing: compiled executable vs onnxruntime (1 thread, median of 50 runs)"
"$out/$name.exe" --inputs "tests/models/$name/test_data_set_0" --bench 50 --threads 1
python3 benches/compiled_vs_ort.py --models "$name" --threads 1 --repeat 50 --no-gemm | grep -E "^\| $name|Geometric" || true
echo
echo "== compress: pare opt --passes 'canonicalize,quantize(bits=8),canonicalize' --calib (static int8: int8 weights per output channel, uint8 activations)"
"$pare" opt "$model" -o "$out/$name.int8.onnx" --passes 'canonicalize,quantize(bits=8),canonicalize' \
    --calib "tests/models/$name/test_data_set_0" --calib "tests/models/$name/test_data_set_1" \
    --report-md "$out/$name.int8.md"
size() { python3 -c 'import os, sys; p = sys.argv[1]; print(sum(os.path.getsize(f) for f in (p, p + ".data") if os.path.exists(f)))' "$1"; }
echo "ONNX bytes (with external data): $(size "$model") -> $(size "$out/$name.int8.onnx")"
echo "== pare eval: original vs int8 on tests/models/$name"
"$pare" eval "$model" "$out/$name.int8.onnx" --inputs "tests/models/$name" | python3 -c '
import json, sys
for o in json.load(sys.stdin)["outputs"]:
    print("  %s: cosine %.5f, max rel err %.3g" % (o["name"], o["cosine_min"], o["max_rel_err"]))'
echo "== onnxruntime runs the int8 model (QDQ): relative L2 error vs the original, test_data_set_2"
python3 - "$model" "$out/$name.int8.onnx" "tests/models/$name/test_data_set_2" <<'PY'
import glob, sys
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
ins = [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(sys.argv[3] + "/input_*.pb"))]
def run(p):
    s = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
    return s.get_outputs(), s.run(None, dict(zip([i.name for i in s.get_inputs()], ins)))
outs, a = run(sys.argv[1])
_, b = run(sys.argv[2])
for o, x, y in zip(outs, a, b):
    if x.dtype.kind == "f":
        e = np.linalg.norm((x - y).ravel()) / np.linalg.norm(x.ravel())
        print(f"  {o.name}: relative L2 error {e:.3g}")
PY
echo "== pare compile the int8 model (quantized MatMul/Gemm run on the int8 kernel pare_k_qmatmul, quantized convolutions on pare_k_qconv)"
"$pare" compile "$out/$name.int8.onnx" --shape "$shape" --emit exe -o "$out/$name.int8.exe" | grep -E "^compiled|plan:|kernels:"
echo "  f32 build:  $("$out/$name.exe" --inputs "tests/models/$name/test_data_set_0" --bench 50 --threads 1 | grep median_ms)"
echo "  int8 build: $("$out/$name.int8.exe" --inputs "tests/models/$name/test_data_set_0" --bench 50 --threads 1 | grep median_ms)"
