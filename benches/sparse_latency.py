#!/usr/bin/env python3
"""Compiled latency of unstructured sparsity: `prune-unstructured` at several sparsities,
compiled by pare (which uses its sparse kernel, `pare_k_spmm`, only for the layers its cost
model predicts to be faster than the dense SGEMM), against the dense compiled model.

For each model and sparsity, in one run on one machine: pare opt 'canonicalize,
prune-unstructured(sparsity=S,method=M),canonicalize' (M = magnitude, or wanda/sparsegpt with
--calib on test_data_set_0/1), pare compile --emit exe for the shapes of test_data_set_0, then
the dense and sparse executables are timed in alternation (--rounds rounds of --repeat runs,
1 thread), the median over rounds reported with the number of sparse kernel calls, and the
fidelity (mean cosine over float outputs, onnxruntime on test_data_set_2). --write replaces
the section "## Unstructured sparsity: compiled latency" of docs/benchmarks.md.

    cargo build --release -p pare-cli
    python3 benches/sparse_latency.py [--models minilm] [--sparsity 0.5,0.7,0.8,0.9]
        [--method magnitude] [--repeat 50] [--rounds 3] [--write]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compiled_vs_ort as cvo  # noqa: E402

ROOT = cvo.ROOT
PARE = cvo.PARE


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fixture(m, k):
    return os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}")


def outputs(path, ds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    files = sorted(f for f in os.listdir(ds) if f.startswith("input_"))
    ins = []
    for f in files:
        t = onnx.TensorProto()
        t.ParseFromString(open(os.path.join(ds, f), "rb").read())
        ins.append(numpy_helper.to_array(t))
    return s.run(None, dict(zip([i.name for i in s.get_inputs()], ins)))


def cosine(a, b):
    cs = []
    for x, y in zip(a, b):
        if x.dtype.kind != "f":
            continue
        x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        cs.append(float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-300)))
    return min(cs)


def compile_exe(src, exe, shape_arg):
    report = exe + ".json"
    subprocess.run([PARE, "compile", src, "--emit", "exe", "-o", exe, "--shape", shape_arg, "--report", report],
                   check=True, capture_output=True, text=True)
    return dict(json.load(open(report)).get("kernels", []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm")
    ap.add_argument("--sparsity", default="0.5,0.7,0.8,0.9")
    ap.add_argument("--method", default="magnitude")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(PARE):
        sys.exit("build first: cargo build --release -p pare-cli")
    tmp = tempfile.mkdtemp(prefix="pare-sparse-")
    rows = []
    for m in a.models.split(","):
        model = os.path.join(ROOT, ".cache", "models", f"{m}.onnx")
        ds = fixture(m, 0)
        shapes = cvo.input_shapes(ds)
        names = cvo.model_inputs(model)
        shape_arg = ",".join(f"{n}={'x'.join(map(str, s))}" for n, (_, s) in zip(names, shapes))
        run_inputs = []
        for k, n in enumerate(names):
            t = onnx.TensorProto()
            t.ParseFromString(open(os.path.join(ds, f"input_{k}.pb"), "rb").read())
            p = os.path.join(tmp, f"{m}.{k}.npy")
            np.save(p, numpy_helper.to_array(t))
            run_inputs.append(f"{n}={p}")
        dense_exe = os.path.join(tmp, f"{m}.dense")
        compile_exe(model, dense_exe, shape_arg)
        ref = outputs(model, fixture(m, 2))
        for s in [float(x) for x in a.sparsity.split(",")]:
            out = os.path.join(tmp, f"{m}.{s}.onnx")
            cmd = [PARE, "opt", model, "-o", out, "--passes",
                   f"canonicalize,prune-unstructured(sparsity={s},method={a.method}),canonicalize"]
            if a.method != "magnitude":
                cmd += ["--calib", fixture(m, 0), "--calib", fixture(m, 1)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            exe = os.path.join(tmp, f"{m}.{s}")
            kernels = compile_exe(out, exe, shape_arg)
            cos = cosine(ref, outputs(out, fixture(m, 2)))
            td, ts = [], []
            for _ in range(a.rounds):
                td.append(cvo.pare_run(dense_exe, run_inputs, 1, a.repeat)["median"])
                ts.append(cvo.pare_run(exe, run_inputs, 1, a.repeat)["median"])
            d, sp = statistics.median(td), statistics.median(ts)
            log(f"{m} sparsity {s}: dense {d:.3f} ms, sparse {sp:.3f} ms, {kernels.get('pare_k_spmm', 0)} sparse calls, cosine {cos:.4f}")
            rows.append((m, "; ".join("x".join(map(str, x)) for _, x in shapes), s, d, sp,
                         kernels.get("pare_k_spmm", 0), kernels.get("pare_k_matmul", 0), cos))
    lines = [f"1 thread; median over {a.rounds} alternating rounds of the median of {a.repeat} runs (ms); "
             f"`prune-unstructured(method={a.method})`; cosine: onnxruntime on test_data_set_2, pruned vs dense.", "",
             "| model | shapes | sparsity | dense (ms) | pruned (ms) | pruned / dense | sparse kernel calls | dense GEMM calls | cosine |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, sh, s, d, sp, ns, nd, cos in rows:
        lines.append(f"| {m} | {sh} | {s:.0%} | {d:.3f} | {sp:.3f} | {sp / d:.2f} | {ns} | {nd} | {cos:.4f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        doc = open(path).read()
        key = "## Unstructured sparsity: compiled latency"
        section = (key + "\n\nReproduce: `cargo build --release -p pare-cli && python3 benches/sparse_latency.py "
                   f"--models {a.models} --sparsity {a.sparsity} --method {a.method} --repeat {a.repeat} "
                   f"--rounds {a.rounds} --write`. Kernel crossover (1 thread, dense packed SGEMM vs "
                   "`pare_k_spmm`): `cargo run --release -p pare-runtime --example spmm_bench`.\n\n" + table)
        doc = re.sub(re.escape(key) + r"\n.*?(?=\n## |\Z)", lambda _: section, doc, flags=re.S) \
            if key in doc else doc.rstrip() + "\n\n" + section
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
