#!/usr/bin/env python3
"""Low-rank sweep: plain SVD vs activation-aware (whitened) SVD on the real models.

For each model and ratio, runs
    pare opt MODEL --calib test_data_set_0 --calib test_data_set_1 \
        --passes 'lowrank(ratio=R,method=M),canonicalize'
and measures, on the held-out tests/models/<name>/test_data_set_2 in onnxruntime, the relative
L2 error of every float output against the dense model, plus the parameters the pass reports.
With --latency it also compiles the dense and the factored models (`pare compile --emit exe`)
and times them at 1 thread (median of --repeat runs).

    python3 benches/lowrank_sweep.py [--models ocr-cls,...] [--ratios 0.25,0.5,0.75]
        [--latency] [--repeat 50] [--json out.json]
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARE = os.path.join(ROOT, "target", "release", "pare")
DEFAULT = "ocr-det,ocr-rec,ocr-cls,orientation,minilm"


def inputs(m, k):
    d = os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}")
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(d + "/input_*.pb"))]


def run(path, ins):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, dict(zip([i.name for i in s.get_inputs()], ins)))


def rel_err(ref, out):
    num = den = 0.0
    for x, y in zip(ref, out):
        if x.dtype.kind == "f":
            x = x.astype(np.float64)
            num += ((x - y) ** 2).sum()
            den += (x ** 2).sum()
    return float(np.sqrt(num / den))


def shapes(m):
    # --shape from the held-out fixture: name=AxBxC per input
    s = ort.InferenceSession(os.path.join(ROOT, ".cache", "models", m + ".onnx"), providers=["CPUExecutionProvider"])
    return ",".join(f"{i.name}={'x'.join(map(str, a.shape)) or '1'}" for i, a in zip(s.get_inputs(), inputs(m, 2)))


def latency(model, m, repeat, d):
    exe = os.path.join(d, "m.exe")
    subprocess.run([PARE, "compile", model, "--emit", "exe", "-o", exe, "--shape", shapes(m)],
                   check=True, capture_output=True)
    fx = os.path.join(ROOT, "tests", "models", m, "test_data_set_2")
    r = subprocess.run([exe, "--inputs", fx, "--bench", str(repeat), "--threads", "1"],
                       check=True, capture_output=True, text=True)
    return float(re.search(r"median_ms=([0-9.]+)", r.stdout).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models.split(","):
            dense = os.path.join(ROOT, ".cache", "models", m + ".onnx")
            ref = run(dense, inputs(m, 2))
            base = latency(dense, m, a.repeat, d) if a.latency else None
            calib = []
            for k in (0, 1):
                calib += ["--calib", os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}")]
            for ratio in [float(x) for x in a.ratios.split(",")]:
                row = {"model": m, "ratio": ratio, "dense_ms": base}
                for meth in ("svd", "asvd"):
                    out = os.path.join(d, f"{m}_{meth}.onnx")
                    r = subprocess.run([PARE, "opt", dense, "-o", out, *calib, "--passes",
                                        f"lowrank(ratio={ratio},method={meth}),canonicalize"],
                                       capture_output=True, text=True)
                    if r.returncode != 0:
                        sys.exit(f"{m} {meth}: {r.stderr}")
                    before = re.search(r"params-before=(\d+)", r.stdout + r.stderr)
                    after = re.search(r"params-after=(\d+)", r.stdout + r.stderr)
                    row[meth] = rel_err(ref, run(out, inputs(m, 2)))
                    row["params_before"] = int(before.group(1)) if before else 0
                    row["params_after"] = int(after.group(1)) if after else 0
                    if a.latency and meth == "asvd":
                        row["factored_ms"] = latency(out, m, a.repeat, d)
                rows.append(row)
                lat = ""
                if a.latency:
                    lat = f" | {row['dense_ms']:.3f} | {row['factored_ms']:.3f}"
                print(f"| {m} | {ratio} | {row['params_before']} → {row['params_after']} | "
                      f"{row['svd']:.4f} | {row['asvd']:.4f}{lat} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
