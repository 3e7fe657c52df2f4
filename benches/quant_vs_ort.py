#!/usr/bin/env python3
"""Int8 quantization side by side: pare's `quantize` vs onnxruntime's quantizer.

For each real model (.cache/models/<name>.onnx, fetched by scripts/fetch_models.py) it builds

  - onnxruntime's int8 models, from the model after `quant_pre_process` (onnxruntime's
    recommended pre-processing: shape inference and constant folding, which also turns
    Paddle's Constant-node weights into initializers its quantizer can see):
      ort static <calib>   quantize_static, QDQ, per_channel=True, uint8 activations, int8
                           weights, calibrated on tests/models/<name>/test_data_set_0 and _1
                           through a CalibrationDataReader; MinMax (its default), Percentile and
                           Entropy calibration; all op types it supports (its default);
      ort static minmax, conv/matmul only   the same, op_types_to_quantize=Conv/MatMul/Gemm
                           (what pare quantizes);
      ort dynamic          quantize_dynamic, int8 weights, MatMul/Gemm (its ConvInteger has
                           no int8-weight CPU kernel);
  - pare's, with the CLI (`--pare`, default target/release/pare):
      pare static          pare opt MODEL --passes 'canonicalize,quantize(bits=8),canonicalize'
                           --calib test_data_set_0 --calib test_data_set_1
      pare static <rule>   the same with calibrate=auto|minmax (the default is percentile)
      pare static (act-per-channel)  one activation grid per channel (each channel's
                           min/max clipped to the tensor's percentile range)
      pare static (max-error=E)  the default with accuracy control: layers restored to f32
                           until the calibration samples' relative error is at most E
      pare dynamic         the same pipeline without --calib
      pare weights-only    quantize(bits=8,weights-only=true): the weight-only reference

and evaluates every model in onnxruntime (CPU, 1 thread, default graph optimizations, as
deployed: onnxruntime runs QDQ models with its int8 kernels) on held-out inputs: the fixture
test_data_set_2 plus --heldout inputs generated like the fixtures (scripts/make_fixtures.py's
generators, seeds crc32("<name>/heldout/<k>"), so the numbers are reproducible). Against the
dense model it prints the cosine similarity (mean and minimum over the inputs; the minimum over
float outputs per input), the relative L2 error, top-1 agreement for the classifiers (ocr-cls,
orientation: per image; ocr-rec: per CTC time step) and the ONNX file size (with external
data). --latency also times onnxruntime on the dense model and on each int8 model (median of
--repeat runs, 1 thread) for reference.

    python3 benches/quant_vs_ort.py [--models ocr-det,...] [--heldout 8] [--pare PATH]
        [--latency] [--repeat 20] [--json out.json] [--write]

--write replaces (or appends) the section "## Int8 quantization vs onnxruntime's quantizer" of
docs/benchmarks.md and leaves the other sections alone.
"""
import argparse
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
from onnx import numpy_helper

warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_fixtures  # noqa: E402  (the fixtures' input generators)

from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
    quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

DEFAULT = "ocr-det,ocr-rec,ocr-cls,orientation,minilm"
SECTION = "## Int8 quantization vs onnxruntime's quantizer"
CLASSIFIERS = {"ocr-cls": "image", "orientation": "image", "ocr-rec": "time step"}
PIPELINE = "canonicalize,quantize(bits=8{opts}),canonicalize"
MARGIN = 0.1


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def fixture_inputs(m, k):
    d = os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}")
    return [numpy_helper.to_array(onnx.load_tensor(f))
            for f in sorted(glob.glob(d + "/input_*.pb"), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))]


def generated_inputs(m, k):
    """Held-out input k, made like the fixtures (make_fixtures.gen) with its own seed."""
    with open(os.path.join(ROOT, "tests", "models", "models.json")) as f:
        spec = {x["name"]: x for x in json.load(f)["models"]}[m]
    model = onnx.load(os.path.join(ROOT, ".cache", "models", m + ".onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(zlib.crc32(f"{m}/heldout/{k}".encode()))
    specs = dict(spec["inputs"])
    if k % 2 == 1:  # every other input uses the fixture set 2 variant (e.g. MiniLM's padding)
        specs.update(spec.get("datasets", {}).get("2", {}))
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = make_fixtures.gen(specs[vi.name], dt, rng, feeds, None)
    return list(feeds.values())


def session(path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run(sess, ins):
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], ins)))


def size(p):
    return sum(os.path.getsize(f) for f in (p, p + ".data") if os.path.exists(f))


class Reader(CalibrationDataReader):
    def __init__(self, names, sets):
        self.data = [dict(zip(names, s)) for s in sets]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        self.i += 1
        return self.data[self.i - 1]

    def rewind(self):
        self.i = 0


def fidelity(m, dense, quant):
    """cosine (mean, min), rel L2 (mean), top-1 agreement (or None) over the inputs."""
    cos, rel, agree, total, agree_c, total_c = [], [], 0, 0, 0, 0
    for d, q in zip(dense, quant):
        per_out = []
        num = den = 0.0
        for x, y in zip(d, q):
            if x.dtype.kind != "f":
                continue
            x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
            per_out.append(float(x64 @ y64 / max(np.linalg.norm(x64) * np.linalg.norm(y64), 1e-300)))
            num += float(((x64 - y64) ** 2).sum())
            den += float((x64 ** 2).sum())
        cos.append(min(per_out))
        rel.append((num / max(den, 1e-300)) ** 0.5)
        if m in CLASSIFIERS:
            a, b = d[0].argmax(-1).ravel(), q[0].argmax(-1).ravel()
            agree += int((a == b).sum())
            total += a.size
            # Confident rows: the dense model's top-1 probability leads the runner-up by
            # >= MARGIN (synthetic inputs give many near-ties, where any change flips top-1).
            srt = np.sort(d[0].reshape(-1, d[0].shape[-1]), axis=-1)
            conf = (srt[:, -1] - srt[:, -2]) >= MARGIN
            agree_c += int(((a == b) & conf).sum())
            total_c += int(conf.sum())
    return {"cos_mean": float(np.mean(cos)), "cos_min": float(np.min(cos)), "rel_l2": float(np.mean(rel)),
            "top1": agree / total if total else None, "top1_n": total,
            "top1_conf": agree_c / total_c if total_c else None, "top1_conf_n": total_c}


def latency(sess, ins, repeat):
    run(sess, ins)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        run(sess, ins)
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def ort_models(m, src, d, names, calib):
    """onnxruntime's int8 variants: (label, path) list; failures are reported and skipped."""
    pre = os.path.join(d, f"{m}.pre.onnx")
    try:
        quant_pre_process(src, pre, skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001 (pre-processing is a recommendation, not a must)
        log(f"  {m}: quant_pre_process failed ({e}); quantizing the original model")
        pre = src
    # Per-channel QDQ needs DequantizeLinear's `axis` (opset 13); the quantizer does not
    # upgrade opset-12 models itself (the result would not load).
    model = onnx.load(pre)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset < 13:
        up = os.path.join(d, f"{m}.pre13.onnx")
        onnx.save(onnx.version_converter.convert_version(model, 13), up)
        pre = up
    out = []
    variants = [
        ("ort static minmax", dict(calibrate_method=CalibrationMethod.MinMax)),
        ("ort static percentile", dict(calibrate_method=CalibrationMethod.Percentile)),
        ("ort static entropy", dict(calibrate_method=CalibrationMethod.Entropy)),
        ("ort static minmax, conv/matmul only",
         dict(calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "MatMul", "Gemm"])),
    ]
    for label, kw in variants:
        p = os.path.join(d, f"{m}.{re.sub('[^a-z0-9]+', '-', label)}.onnx")
        t = time.time()
        try:
            quantize_static(pre, p, Reader(names, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **kw)
            out.append((label, p))
            log(f"  {label}: {time.time() - t:.1f} s")
        except Exception as e:  # noqa: BLE001
            log(f"  {label}: failed: {e}")
    p = os.path.join(d, f"{m}.ort-dynamic.onnx")
    try:
        quantize_dynamic(pre, p, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        out.append(("ort dynamic (MatMul/Gemm)", p))
    except Exception as e:  # noqa: BLE001
        log(f"  ort dynamic: failed: {e}")
    return out


def pare_models(m, src, d, pare, calib_dirs):
    out = []
    calib = [a for c in calib_dirs for a in ("--calib", c)]
    for label, opts, use_calib in [
        ("pare static (default: percentile)", "", True),
        ("pare static (calibrate=auto)", ",calibrate=auto", True),
        ("pare static (calibrate=minmax)", ",calibrate=minmax", True),
        ("pare static (act-per-channel)", ",act-per-channel=true", True),
        ("pare static (max-error=0.05)", ",max-error=0.05", True),
        ("pare static (max-error=0.02)", ",max-error=0.02", True),
        ("pare dynamic (no --calib)", "", False),
        ("pare weights-only", ",weights-only=true", False),
    ]:
        p = os.path.join(d, f"{m}.{re.sub('[^a-z0-9]+', '-', label)}.onnx")
        cmd = [pare, "opt", src, "--passes", PIPELINE.format(opts=opts), "-o", p] + (calib if use_calib else [])
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"  {label}: pare failed: {r.stderr.strip()[-400:]}")
            continue
        log(f"  {label}: {time.time() - t:.1f} s")
        out.append((label, p))
    return out


def bench(m, args, d):
    src = os.path.join(ROOT, ".cache", "models", m + ".onnx")
    if not os.path.exists(src):
        log(f"SKIP {m}: {src} missing (python3 scripts/fetch_models.py)")
        return None
    names = [i.name for i in session(src).get_inputs()]
    calib = [fixture_inputs(m, 0), fixture_inputs(m, 1)]
    calib_dirs = [os.path.join(ROOT, "tests", "models", m, f"test_data_set_{k}") for k in (0, 1)]
    evals = [fixture_inputs(m, 2)] + [generated_inputs(m, k) for k in range(args.heldout)]
    dense_sess = session(src)
    dense = [run(dense_sess, x) for x in evals]
    rows = [{"label": "dense f32", "size": size(src), **fidelity(m, dense, dense), "cos_mean_noopt": 1.0,
             "top1_noopt": 1.0 if m in CLASSIFIERS else None}]
    if args.latency:
        rows[0]["ms"] = latency(dense_sess, evals[0], args.repeat)
    log(f"{m}:")
    for label, p in ort_models(m, src, d, names, calib) + pare_models(m, src, d, args.pare, calib_dirs):
        try:
            s = session(p)
            q = [run(s, x) for x in evals]
        except Exception as e:  # noqa: BLE001
            log(f"  {label}: onnxruntime cannot run it: {e}")
            continue
        row = {"label": label, "size": size(p), **fidelity(m, dense, q)}
        # The QDQ graph as written (no fusion into onnxruntime's int8 kernels): the
        # quantization scheme alone, without kernel effects such as u8×s8 saturation.
        try:
            s0 = session(p, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
            f0 = fidelity(m, dense, [run(s0, x) for x in evals])
            row["cos_mean_noopt"], row["top1_noopt"] = f0["cos_mean"], f0["top1"]
        except Exception as e:  # noqa: BLE001
            log(f"  {label}: onnxruntime without optimizations cannot run it: {e}")
        if args.latency:
            row["ms"] = latency(s, evals[0], args.repeat)
        rows.append(row)
        log(f"  {label:<40} cos {row['cos_mean']:.5f} (min {row['cos_min']:.5f})  rel L2 {row['rel_l2']:.4f}"
            + (f"  top-1 {row['top1']:.3f}" if row["top1"] is not None else "")
            + f"  {row['size'] / 1e6:.2f} MB" + (f"  {row['ms']:.2f} ms" if "ms" in row else ""))
    return {"model": m, "inputs": len(evals), "rows": rows}


def table(results, args):
    lat = args.latency
    lines = ["| model | quantizer | cosine mean | cosine min | rel. L2 | top-1 agreement "
             f"| top-1, margin ≥ {MARGIN} | cosine mean, no ort opt | top-1, no ort opt | ONNX MB |"
             + (" ort ms |" if lat else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if lat else "")]
    for r in results:
        for row in r["rows"]:
            unit = CLASSIFIERS.get(r["model"], "")
            top = "" if row["top1"] is None else f"{row['top1']:.3f} ({row['top1_n']} {unit}s)"
            tc = "" if row.get("top1_conf") is None else f"{row['top1_conf']:.3f} ({row['top1_conf_n']})"
            c0 = row.get("cos_mean_noopt")
            t0 = row.get("top1_noopt")
            lines.append(f"| {r['model']} | {row['label']} | {row['cos_mean']:.5f} | {row['cos_min']:.5f} | "
                         f"{row['rel_l2']:.4f} | {top} | {tc} | {'' if c0 is None else f'{c0:.5f}'} | "
                         f"{'' if t0 is None else f'{t0:.3f}'} | {row['size'] / 1e6:.2f} |"
                         + (f" {row['ms']:.2f} |" if lat else ""))
    return "\n".join(lines)


def write_section(text):
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    start = doc.find(SECTION + "\n")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = doc.find("\n## ", start + len(SECTION))
        end = len(doc) if nxt < 0 else nxt + 1
        doc = doc[:start] + text.rstrip("\n") + "\n" + ("\n" + doc[end:] if nxt >= 0 else "")
    with open(path, "w") as f:
        f.write(doc)
    log(f"wrote the section '{SECTION[3:]}' of {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--heldout", type=int, default=8, help="generated held-out inputs besides test_data_set_2")
    ap.add_argument("--pare", default=os.path.join(ROOT, "target", "release", "pare"))
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(args.pare):
        sys.exit(f"quant_vs_ort: {args.pare} missing: cargo build --release -p pare-cli (or pass --pare)")
    results = []
    with tempfile.TemporaryDirectory() as d:
        for m in args.models.split(","):
            r = bench(m, args, d)
            if r:
                results.append(r)
    text = table(results, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.write:
        cmd = "python3 benches/quant_vs_ort.py --heldout %d%s --write" % (args.heldout, " --latency" if args.latency else "")
        n = results[0]["inputs"] if results else 0
        body = f"""{SECTION}

pare's `quantize(bits=8)` (static int8: uint8 activations with calibrated scales, int8
per-channel weights, QDQ) against onnxruntime {ort.__version__}'s `quantize_static` / `quantize_dynamic`
on the same calibration data (`test_data_set_0` and `_1` of each model), judged in onnxruntime
(CPU, default graph optimizations, i.e. its int8 kernels) on {n} held-out inputs per model
(`test_data_set_2` and {n - 1} more generated like the fixtures). Cosine: per input the minimum
over float outputs, then mean and minimum over the inputs. Top-1 agreement: per image for the
classifiers, per CTC time step for ocr-rec; the generated inputs are synthetic text pictures on
which the classifiers are often unsure, so the margin column counts only the inputs where the
dense model's top probability leads the runner-up by at least {MARGIN}. onnxruntime's models come from its recommended
`quant_pre_process` (which folds Paddle's Constant-node weights into initializers; without it
its quantizer leaves those weights in f32); by default it quantizes every op type it supports,
the `conv/matmul only` row restricts it to what pare quantizes. `pare static` is
`pare opt MODEL --passes 'canonicalize,quantize(bits=8),canonicalize' --calib …/test_data_set_0
--calib …/test_data_set_1`; `pare dynamic` is the same without `--calib`; `pare weights-only` adds
`weights-only=true`; pare's default range rule (`calibrate=percentile`, 99.99) is compared with
`calibrate=auto` (per tensor, the rule with the smallest error at the outputs of the layers
reading it) and `minmax`. "no ort opt" runs the same model with onnxruntime's graph
optimizations off, i.e. the QDQ graph as written, without its int8 kernels.{" Latency: onnxruntime, 1 thread, median of %d runs on test_data_set_2, for reference only (pare's own integer kernels do not exist yet)." % args.repeat if args.latency else ""}
Machine: {platform.machine()}, {os.cpu_count()} cores.

Reading the table:

- pare puts QuantizeLinear/DequantizeLinear only on the inputs of the layers it quantizes and
  keeps their outputs, biases and every other op in f32; onnxruntime's default also quantizes
  the outputs and most other ops (Add, Mul, pooling, Softmax, LayerNorm inputs, Gather in
  MiniLM), which is where most of its error comes from (its `conv/matmul only` row quantizes
  the same layers as pare, but still their outputs). The flip side: without an output
  QuantizeLinear, onnxruntime does not fuse pare's Conv into QLinearConv, so pare's static
  models do not get its int8 conv kernels (see the latency column).
- The trailing `canonicalize` folds the DequantizeLinear of small int8 weights back to f32
  (fold-constants' `max-growth-bytes`, 64 KiB), so the small models' files shrink less than
  their weights were quantized; the numbers are unchanged by it.
- In this onnxruntime version the Entropy calibration gives exactly MinMax's model.

{text}

Reproduce (after `cargo build --release -p pare-cli`):

```
{cmd}
```
"""
        write_section(body)


if __name__ == "__main__":
    main()
