#!/usr/bin/env python3
"""Times pare's compiled executables against onnxruntime on every real model pare compiles.

In one run on one machine, for each real model: `pare compile --emit exe` for the shapes of
tests/models/<name>/test_data_set_0 (compile time recorded), then for each thread count T the
executable runs `--bench N --threads T` (median and p90 of N runs after one warm-up, peak RSS)
and onnxruntime (CPU provider, all graph optimizations, intra_op_num_threads=T, same inputs,
median of N runs after one warm-up, peak RSS of a fresh process). Each measurement runs in its
own process, alternating pare and onnxruntime. Prints a Markdown table; with --write replaces the
"Compiled" section of docs/benchmarks.md. Also measures single-core SGEMM GFLOP/s.

Usage: python3 benches/compiled_vs_ort.py [--threads 1,2] [--repeat 50] [--write]
(build first: cargo build --release -p pare-cli)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARE = os.path.join(ROOT, "target", "release", "pare")

ORT_CHILD = r'''
import sys, time, glob, os, json
import numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper
model, ds, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
files = sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
inputs = []
for f in files:
    t = onnx.TensorProto(); t.ParseFromString(open(f, "rb").read()); inputs.append(numpy_helper.to_array(t))
o = ort.SessionOptions()
o.intra_op_num_threads = threads
o.inter_op_num_threads = 1
o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
feed = dict(zip([i.name for i in s.get_inputs()], inputs))
s.run(None, feed)
ts = []
for _ in range(repeat):
    t = time.perf_counter(); s.run(None, feed); ts.append((time.perf_counter() - t) * 1e3)
ts.sort()
rss = 0.0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        rss = int(line.split()[1]) / 1024.0
print(json.dumps({"median": ts[len(ts) // 2], "p90": ts[min(len(ts) - 1, int(len(ts) * 0.9))], "rss": rss}))
'''


def input_shapes(ds):
    import onnx
    out = []
    for f in sorted(os.listdir(ds)):
        if f.startswith("input_") and f.endswith(".pb"):
            t = onnx.TensorProto()
            t.ParseFromString(open(os.path.join(ds, f), "rb").read())
            out.append((t.name, list(t.dims)))
    return out


def model_inputs(model):
    import onnx
    m = onnx.load(model, load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in init]


def ort_run(model, ds, threads, repeat):
    out = subprocess.run([sys.executable, "-c", ORT_CHILD, model, ds, str(threads), str(repeat)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pare_run(exe, inputs, threads, repeat):
    out = subprocess.run([exe, "--inputs", *inputs, "--bench", str(repeat), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return {
        "median": float(re.search(r"median_ms=([0-9.]+)", out).group(1)),
        "p90": float(re.search(r"p90_ms=([0-9.]+)", out).group(1)),
        "rss": float(re.search(r"peak_rss_mb=([0-9.]+)", out).group(1)),
    }


def gemm_table():
    out = subprocess.run(["cargo", "run", "--release", "-q", "-p", "pare-runtime", "--example", "gemm_gflops"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return out.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternate pare and onnxruntime this many times per row and keep the round "
                         "with the median time of each (a shared machine's slow spells then hit both)")
    ap.add_argument("--models", default="")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--no-gemm", action="store_true", help="skip the SGEMM table")
    a = ap.parse_args()
    if not os.path.exists(PARE):
        sys.exit("build first: cargo build --release -p pare-cli")
    threads = [int(t) for t in a.threads.split(",")]
    manifest = json.load(open(os.path.join(ROOT, "tests", "models", "models.json")))
    only = set(filter(None, a.models.split(",")))
    tmp = tempfile.mkdtemp(prefix="pare-bench-")
    rows, skipped = [], []
    for m in manifest["models"]:
        name = m["name"]
        if only and name not in only:
            continue
        model = os.path.join(ROOT, ".cache", "models", f"{name}.onnx")
        ds = os.path.join(ROOT, "tests", "models", name, "test_data_set_0")
        shapes = input_shapes(ds)
        names = model_inputs(model)
        # Scalar inputs (a sample rate) are deployment constants: bound at compile time.
        import onnx
        from onnx import numpy_helper
        binds, shape_items, run_inputs = [], [], []
        for k, (n, (_, s)) in enumerate(zip(names, shapes)):
            t = onnx.TensorProto()
            t.ParseFromString(open(os.path.join(ds, f"input_{k}.pb"), "rb").read())
            arr = numpy_helper.to_array(t)
            if len(s) == 0:
                binds.append(f"{n}={arr.item()}")
            else:
                shape_items.append(f"{n}={'x'.join(map(str, s))}")
                path = os.path.join(tmp, f"{name}.{k}.npy")
                np.save(path, arr)
                run_inputs.append(f"{n}={path}")
        exe = os.path.join(tmp, name)
        report = os.path.join(tmp, name + ".json")
        cmd = [PARE, "compile", model, "--emit", "exe", "-o", exe, "--shape", ",".join(shape_items), "--report", report]
        if binds:
            cmd += ["--bind", ",".join(binds)]
        c = subprocess.run(cmd, capture_output=True, text=True)
        if c.returncode != 0:
            skipped.append((name, c.stderr.strip().splitlines()[-1] if c.stderr.strip() else "failed"))
            continue
        rep = json.load(open(report))
        for t in threads:
            ps, os_ = [], []
            for _ in range(max(1, a.rounds)):
                ps.append(pare_run(exe, run_inputs, t, a.repeat))
                os_.append(ort_run(model, ds, t, a.repeat))
            p = sorted(ps, key=lambda r: r["median"])[len(ps) // 2]
            o = sorted(os_, key=lambda r: r["median"])[len(os_) // 2]
            rows.append((name, "; ".join("x".join(map(str, s)) for _, s in shapes), t, p, o, rep["compile_s"]))
    lines = [f"Median over {max(1, a.rounds)} alternating rounds of the median of {a.repeat} runs after one warm-up; inputs: test_data_set_0; onnxruntime "
             f"{__import__('onnxruntime').__version__} (CPU, ORT_ENABLE_ALL); `pare compile --emit exe` for this CPU.", ""]
    lines += ["| model | input shapes | threads | pare (ms) | p90 | onnxruntime (ms) | p90 | ratio pare/ort | pare peak RSS (MB) | ort peak RSS (MB) | compile (s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, s, t, p, o, cs in rows:
        lines.append(f"| {n} | {s} | {t} | {p['median']:.3f} | {p['p90']:.3f} | {o['median']:.3f} | {o['p90']:.3f} | "
                     f"{p['median'] / o['median']:.2f} | {p['rss']:.0f} | {o['rss']:.0f} | {cs:.2f} |")
    lines.append("")
    for t in threads:
        r = [p["median"] / o["median"] for n, s, tt, p, o, cs in rows if tt == t]
        if r:
            lines.append(f"Geometric mean ratio pare / onnxruntime at {t} thread(s): **{float(np.exp(np.mean(np.log(r)))):.2f}** over {len(r)} models")
            lines.append("")
    for n, why in skipped:
        lines.append(f"- not compiled: {n}: {why}")
    table = "\n".join(lines).rstrip() + "\n"
    gemm = "" if a.no_gemm and not a.write else gemm_table()
    print(table)
    print(gemm)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        doc = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
        section = (
            "## Compiled (LLVM CPU backend) vs onnxruntime\n\n"
            "Reproduce: `cargo build --release -p pare-cli && python3 benches/compiled_vs_ort.py --threads 1,2 --write`\n\n"
            + table + "\n### SGEMM (pare-runtime, `cargo run --release -p pare-runtime --example gemm_gflops`)\n\n"
            "Peak: about 98 GFLOP/s per core (2 FMA pipes x 8 lanes x 2 flops x ~3.06 GHz).\n\n```\n" + gemm + "\n```\n"
        )
        key = "## Compiled (LLVM CPU backend) vs onnxruntime"
        doc = re.sub(re.escape(key) + r"\n.*?(?=\n## |\Z)", lambda _: section, doc, flags=re.S) \
            if key in doc else doc.rstrip() + "\n\n" + section
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
