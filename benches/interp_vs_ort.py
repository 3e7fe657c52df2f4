#!/usr/bin/env python3
"""Times pare's reference interpreter against onnxruntime on every real model.

Both run the same fixture inputs (tests/models/<name>/test_data_set_0) at the same thread count,
in one session on the same machine; each reports the median of REPEAT runs after a warm-up.
onnxruntime runs with all graph optimizations on. Writes a Markdown table to stdout, and with
--write replaces the "Interpreter" section of docs/benchmarks.md.

Usage: python3 benches/interp_vs_ort.py [--threads 1] [--repeat 20] [--write]
(build first: cargo build --release -p pare-cli)
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARE = os.path.join(ROOT, "target", "release", "pare")


def load_inputs(ds):
    files = sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return out


def ort_median(model, inputs, threads, repeat):
    import time
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in s.get_inputs()], inputs))
    s.run(None, feed)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        s.run(None, feed)
        ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[len(ts) // 2]


def pare_median(model, ds, threads, repeat):
    out = subprocess.run(
        [PARE, "run", model, "--inputs", ds, "--out", "/tmp/pare-bench-out", "--threads", str(threads), "--repeat", str(repeat)],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(re.search(r"median_ms=([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(PARE):
        sys.exit("build first: cargo build --release -p pare-cli")
    manifest = json.load(open(os.path.join(ROOT, "tests", "models", "models.json")))
    rows = []
    for m in manifest["models"]:
        name = m["name"]
        model = os.path.join(ROOT, ".cache", "models", f"{name}.onnx")
        ds = os.path.join(ROOT, "tests", "models", name, "test_data_set_0")
        shapes = "; ".join("x".join(map(str, v.shape)) for v in load_inputs(ds))
        o = ort_median(model, load_inputs(ds), a.threads, a.repeat)
        p = pare_median(model, ds, a.threads, a.repeat)
        rows.append((name, shapes, p, o, p / o))
    geo = float(np.exp(np.mean([np.log(r[4]) for r in rows])))
    lines = [
        f"Threads: {a.threads}; median of {a.repeat} runs after one warm-up; inputs: test_data_set_0.",
        "",
        "| model | input shapes | pare interpreter (ms) | onnxruntime (ms) | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {p:.2f} | {o:.2f} | {r:.1f}× |" for n, s, p, o, r in rows]
    lines += ["", f"Geometric mean ratio (interpreter / onnxruntime): **{geo:.1f}×**"]
    table = "\n".join(lines)
    print(table)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
        section = (
            "## Interpreter vs onnxruntime\n\n"
            "The reference interpreter is the test oracle and calibration engine, not the product's "
            "fast path (that is the compiled code); this tracks that it stays usable.\n\n"
            "Reproduce: `cargo build --release -p pare-cli && python3 benches/interp_vs_ort.py --threads 1 --write`\n\n"
            + table + "\n"
        )
        doc = re.sub(r"## Interpreter vs onnxruntime\n.*?(?=\n## |\Z)", lambda _: section, doc, flags=re.S) \
            if "## Interpreter vs onnxruntime" in doc else doc.rstrip() + "\n\n" + section
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
