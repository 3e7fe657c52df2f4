#!/usr/bin/env python3
"""Compiled int8 latency: pare's quantized models compiled to its int8 kernel, against pare's
own f32 build and against onnxruntime running onnxruntime's own quantized models.

For each real model (default: the GEMM-heavy ones, minilm and ocr-rec, plus ocr-cls), in one
run on one machine:

  pare f32        pare compile of the dense model (--emit exe, shapes of test_data_set_0)
  pare dynamic    pare opt 'canonicalize,quantize(bits=8),canonicalize' (no --calib), compiled
  pare static     the same with --calib test_data_set_0 --calib test_data_set_1, compiled
  ort f32         onnxruntime on the dense model
  ort dynamic     onnxruntime on quantize_dynamic's model (int8 weights, MatMul/Gemm)
  ort static      onnxruntime on quantize_static's model (QDQ, per-channel int8 weights, uint8
                  activations, MinMax, same calibration sets)
  pare on ort-*   onnxruntime's two quantized models compiled by pare (imported as they are:
                  MatMulInteger, QDQ MatMuls and QDQ convolutions become pare's int8
                  kernels)

onnxruntime runs with all graph optimizations (its QDQ models then use its int8 kernels),
intra_op_num_threads = T. Every measurement is the median of --repeat runs after a warm-up, in
its own process; the variants are measured in alternation, --rounds times, and the median over
rounds is reported. Prints a Markdown table of milliseconds and the ratios the quantization
issue's targets name (pare int8 / pare f32, pare int8 / ort int8); --write replaces the section
"## Compiled int8 latency" of docs/benchmarks.md.

    cargo build --release -p pare-cli
    python3 benches/quant_latency.py [--models minilm,ocr-rec] [--threads 1,2] [--repeat 50]
        [--rounds 3] [--write]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compiled_vs_ort as cvo  # noqa: E402
import quant_vs_ort as qvo  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static)

ROOT = cvo.ROOT
PARE = cvo.PARE
PIPELINE = "canonicalize,quantize(bits=8),canonicalize"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fixture(m, k):
    return os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}")


def pare_exe(m, model, calib, out_dir, tag, shape_arg, run_inputs):
    """Quantizes (unless tag is f32) and compiles; returns the executable's path."""
    src = model
    if not tag.startswith("f32"):
        src = os.path.join(out_dir, f"{m}.{tag}.onnx")
        cmd = [PARE, "opt", model, "--passes", PIPELINE, "-o", src]
        if tag == "static":
            for c in calib:
                cmd += ["--calib", c]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    exe = os.path.join(out_dir, f"{m}.{tag}")
    report = exe + ".json"
    r = subprocess.run([PARE, "compile", src, "--emit", "exe", "-o", exe, "--shape", shape_arg,
                        "--report", report], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-600:])
    import json
    kernels = dict(json.load(open(report)).get("kernels", []))
    q = kernels.get("pare_k_qmatmul", 0) + kernels.get("pare_k_qconv", 0)
    return exe, q


def ort_quantized(m, model, calib_sets, names, out_dir):
    pre = os.path.join(out_dir, f"{m}.pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        quant_pre_process(model, pre, skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001
        log(f"  {m}: quant_pre_process failed ({e}); quantizing the original model")
        pre = model
    mo = onnx.load(pre)
    opset = next((o.version for o in mo.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        up = os.path.join(out_dir, f"{m}.pre13.onnx")
        onnx.save(onnx.version_converter.convert_version(mo, 13), up)
        pre = up
    dyn = os.path.join(out_dir, f"{m}.ort-dynamic.onnx")
    quantize_dynamic(pre, dyn, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    st = os.path.join(out_dir, f"{m}.ort-static.onnx")
    quantize_static(pre, st, qvo.Reader(names, calib_sets), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return dyn, st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,ocr-rec,ocr-cls")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    if not os.path.exists(PARE):
        sys.exit("build first: cargo build --release -p pare-cli")
    threads = [int(t) for t in a.threads.split(",")]
    tmp = tempfile.mkdtemp(prefix="pare-qlat-")
    rows = []
    for m in a.models.split(","):
        model = os.path.join(ROOT, ".cache", "models", f"{m}.onnx")
        if not os.path.exists(model):
            log(f"SKIP {m}: {model} missing (python3 scripts/fetch_models.py)")
            continue
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
        calib = [fixture(m, 0), fixture(m, 1)]
        log(f"{m}: building")
        variants = {}
        for tag in ("f32", "dynamic", "static"):
            try:
                exe, q = pare_exe(m, model, calib, tmp, tag, shape_arg, run_inputs)
                variants[f"pare {tag}"] = ("pare", exe, q)
            except Exception as e:  # noqa: BLE001
                log(f"  pare {tag}: {e}")
        calib_sets = [qvo.fixture_inputs(m, 0), qvo.fixture_inputs(m, 1)]
        try:
            dyn, st = ort_quantized(m, model, calib_sets, names, tmp)
            variants["ort f32"] = ("ort", model, None)
            variants["ort dynamic"] = ("ort", dyn, None)
            variants["ort static"] = ("ort", st, None)
            # onnxruntime's own quantized models, compiled by pare (QDQ / MatMulInteger import).
            for tag, path in (("ort-dynamic", dyn), ("ort-static", st)):
                try:
                    exe, q = pare_exe(m, path, calib, tmp, "f32-" + tag, shape_arg, run_inputs)
                    variants[f"pare on {tag}"] = ("pare", exe, q)
                except Exception as e:  # noqa: BLE001
                    log(f"  pare on {tag}: {e}")
        except Exception as e:  # noqa: BLE001
            log(f"  onnxruntime quantization failed: {e}")
        for t in threads:
            times = {k: [] for k in variants}
            for r in range(a.rounds):
                for k, (kind, path, _) in variants.items():
                    if kind == "pare":
                        times[k].append(cvo.pare_run(path, run_inputs, t, a.repeat)["median"])
                    else:
                        times[k].append(cvo.ort_run(path, ds, t, a.repeat)["median"])
            med = {k: statistics.median(v) for k, v in times.items()}
            log(f"  {t} thread(s): " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()))
            rows.append((m, "; ".join("x".join(map(str, s)) for _, s in shapes), t, med,
                         {k: v[2] for k, v in variants.items() if v[2] is not None}))
    order = ["pare f32", "pare dynamic", "pare static", "ort f32", "ort dynamic", "ort static",
             "pare on ort-dynamic", "pare on ort-static"]
    lines = [f"Median over {a.rounds} alternating rounds of the median of {a.repeat} runs (ms); inputs "
             f"test_data_set_0; onnxruntime {__import__('onnxruntime').__version__} (CPU, ORT_ENABLE_ALL). "
             "int8 calls: MatMul/Gemm layers compiled to `pare_k_qmatmul` and convolutions compiled to "
             "`pare_k_qconv` (dynamic / static).", "",
             "| model | shapes | threads | " + " | ".join(order) + " | int8 calls | pare dyn / pare f32 | pare static / pare f32 "
             "| pare dyn / ort dyn | pare static / ort static |",
             "|---|---|---|" + "---:|" * (len(order) + 5)]
    for m, s, t, med, q in rows:
        def g(k):
            return med.get(k)

        def ratio(x, y):
            return f"{g(x) / g(y):.2f}" if g(x) and g(y) else ""
        lines.append(f"| {m} | {s} | {t} | " + " | ".join(f"{g(k):.3f}" if g(k) else "" for k in order)
                     + f" | {q.get('pare dynamic', '')} / {q.get('pare static', '')} | {ratio('pare dynamic', 'pare f32')} | "
                     f"{ratio('pare static', 'pare f32')} | {ratio('pare dynamic', 'ort dynamic')} | "
                     f"{ratio('pare static', 'ort static')} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        doc = open(path).read()
        key = "## Compiled int8 latency"
        section = (key + "\n\nReproduce: `cargo build --release -p pare-cli && python3 benches/quant_latency.py "
                   f"--models {a.models} --threads {a.threads} --repeat {a.repeat} --rounds {a.rounds} --write`\n\n" + table)
        doc = re.sub(re.escape(key) + r"\n.*?(?=\n## |\Z)", lambda _: section, doc, flags=re.S) \
            if key in doc else doc.rstrip() + "\n\n" + section
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
