#!/usr/bin/env bash
# The main job on a bundled real model: fetch it, build pare, inspect it, run it on a fixture
# input, canonicalize it (folding, fusion, layout clean-up) with a report, measure the fidelity of
# the result against the original, and check that onnxruntime runs it with the same outputs.
# Usage: scripts/demo.sh [MODEL_NAME]   (a name from tests/models/models.json; default minilm)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-minilm}
python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
python3 scripts/fetch_models.py "$name"
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
