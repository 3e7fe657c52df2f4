#!/usr/bin/env bash
# The main job on a bundled real model: fetch it, build pare, inspect it, run it on a fixture
# input, export it back to ONNX and check that onnxruntime reproduces its outputs.
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
echo "== round trip: import -> IR -> export, then onnxruntime on the exported model"
"$pare" ir "$model" > "$out/$name.ir"
echo "IR text: $out/$name.ir ($(wc -l < "$out/$name.ir") lines)"
"$pare" export "$model" -o "$out/$name.roundtrip.onnx"
python3 scripts/ort_check.py "$out/$name.roundtrip.onnx=tests/models/$name"
