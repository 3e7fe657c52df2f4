#!/usr/bin/env python3
"""Structured-pruning sweep on the real CNN models: fidelity, size and compiled latency.

For each model, ratio and method, runs
    pare opt MODEL --passes 'canonicalize,prune-channels(ratio=R,...),canonicalize' [--calib CAL]
and measures against the dense model, in onnxruntime, on evaluation inputs that are not the
calibration inputs: top-1 agreement (classifiers) and cosine similarity / relative L2 error of
every float output; the FLOPs the pare report gives (at the evaluation shape), the ONNX file
size, and with --latency the compiled latency (`pare compile --emit exe`, 1 thread): dense and
pruned executables are timed alternately three times (each a median of --repeat runs), and
each side's median of those is reported, so that load on the machine hits both alike.

Inputs come from the fixture generator (scripts/make_fixtures.py: synthetic text images) with
seeds of their own: --calib-samples for calibration ("<model>/calib/i"), --eval-samples for
evaluation ("<model>/eval/i").

Methods: `l1` (filter norms, no calibration, no update) and `hessian` (OBS score from the
calibration XᵀX + least-squares update of the consumers).

    python3 benches/prune_sweep.py [--models ocr-cls,...] [--ratios 0.1,0.2,0.3,0.4,0.5]
        [--methods l1,hessian] [--latency] [--repeat 50] [--json out.json] [--svg out.svg]
        [--write]   # replace the "Structured pruning" section of docs/benchmarks.md
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_fixtures  # noqa: E402  (the fixture input generator)

PARE = os.path.join(ROOT, "target", "release", "pare")
DEFAULT = "ocr-cls,orientation,ocr-rec,ocr-det"
CLASSIFIERS = {"ocr-cls", "orientation"}
METHODS = {
    "l1": "score=l1,reconstruct=off",
    "hessian": "score=hessian,reconstruct=obs",
    "hessian+refit": "score=hessian,reconstruct=refit",
    "hessian-global": "score=hessian,scope=global,reconstruct=obs",
    "activation": "score=activation,reconstruct=obs",
    "l1+obs": "score=l1,reconstruct=obs",
    "hessian+evo": "score=hessian,reconstruct=obs,search=evo,search-samples=0",
    "hessian+evo-params": "score=hessian,reconstruct=obs,search=evo,search-samples=0,budget=params",
    "hessian+evo-latency": "score=hessian,reconstruct=obs,search=evo,search-samples=0,budget=latency",
}
SECTION = "## Structured pruning (prune-channels)"


def manifest(m):
    with open(os.path.join(ROOT, "tests", "models", "models.json")) as f:
        ms = json.load(f)
    ms = ms["models"] if isinstance(ms, dict) else ms
    return next(x for x in ms if x["name"] == m)


def make_samples(m, tag, n, out_dir):
    """n input dicts from the fixture generator, each also saved as <out_dir>/<i>/<name>.npy."""
    spec = manifest(m)
    model = onnx.load(os.path.join(ROOT, ".cache", "models", m + ".onnx"), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    gins = [i for i in model.graph.input if i.name not in inits]
    samples = []
    for i in range(n):
        rng = np.random.default_rng(zlib.crc32(f"{m}/{tag}/{i}".encode()))
        feeds = {}
        for vi in gins:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            feeds[vi.name] = make_fixtures.gen(spec["inputs"][vi.name], dtype, rng, feeds, None)
        d = os.path.join(out_dir, f"{tag}_{i}")
        os.makedirs(d, exist_ok=True)
        for name, arr in feeds.items():
            np.save(os.path.join(d, sanitize(name) + ".npy"), arr)
        samples.append(feeds)
    return samples


def session(path, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def outputs(path, samples):
    s = session(path)
    return [s.run(None, feeds) for feeds in samples]


def fidelity(m, ref, out):
    """min cosine, relative L2 error over all float outputs and samples; top-1 agreement."""
    num = den = 0.0
    cos = 1.0
    agree = total = 0
    for r, o in zip(ref, out):
        for x, y in zip(r, o):
            if x.dtype.kind != "f":
                continue
            x, y = x.astype(np.float64), y.astype(np.float64)
            num += ((x - y) ** 2).sum()
            den += (x ** 2).sum()
            for a, b in zip(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)):
                cos = min(cos, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
        if m in CLASSIFIERS:
            x, y = r[0], o[0]
            agree += int((x.argmax(-1) == y.argmax(-1)).sum())
            total += x.shape[0]
    return {"cosine": cos, "rel_err": float(np.sqrt(num / max(den, 1e-30))),
            "top1": agree / total if total else None}


def shape_arg(samples):
    return ",".join(f"{k}={'x'.join(map(str, v.shape)) or '1'}" for k, v in samples[0].items())


def optimize(m, pipe, calib_dirs, shape, out):
    dense = os.path.join(ROOT, ".cache", "models", m + ".onnx")
    rep = out + ".json"
    calib = [a for d in calib_dirs for a in ("--calib", d)]
    r = subprocess.run([PARE, "opt", dense, "-o", out, "--passes", pipe, "--shape", shape,
                        "--report", rep, *calib], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{m} {pipe}: {r.stderr}")
    t = re.search(r"([0-9.]+) GFLOP → ([0-9.]+) GFLOP", r.stdout + r.stderr)
    p = re.search(r"params (\d+) → (\d+)", r.stdout + r.stderr)
    return {"gflops": (float(t.group(1)), float(t.group(2))) if t else None,
            "params": (int(p.group(1)), int(p.group(2))) if p else None}


def onnx_bytes(path):
    n = os.path.getsize(path)
    if os.path.exists(path + ".data"):
        n += os.path.getsize(path + ".data")
    return n


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def compile_exe(model, shape, exe):
    subprocess.run([PARE, "compile", model, "--emit", "exe", "-o", exe, "--shape", shape],
                   check=True, capture_output=True)
    return exe


def bench(exe, sample_dir, names, repeat):
    ins = [f"{n}={os.path.join(sample_dir, sanitize(n) + '.npy')}" for n in names]
    r = subprocess.run([exe, "--inputs", *ins, "--bench", str(repeat), "--threads", "1"],
                       check=True, capture_output=True, text=True)
    return float(re.search(r"median_ms=([0-9.]+)", r.stdout).group(1))


def paired(dense_exe, pruned_exe, sample_dir, names, repeat, rounds=3):
    """Dense and pruned timed alternately `rounds` times; the median of each side's medians."""
    a, b = [], []
    for _ in range(rounds):
        a.append(bench(dense_exe, sample_dir, names, repeat))
        b.append(bench(pruned_exe, sample_dir, names, repeat))
    return float(np.median(a)), float(np.median(b))


def svg(rows, path):
    """Fidelity (cosine) vs FLOPs removed, one line per model and method."""
    w, h, ml, mb = 640, 400, 60, 50
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
    series = {}
    for r in rows:
        series.setdefault((r["model"], r["method"]), []).append(
            (1 - r["gflops_after"] / r["gflops_before"], r["cosine"]))
    ymin = min(0.5, min(c for s in series.values() for _, c in s))
    px = lambda x: ml + x / 0.8 * (w - ml - 20)
    py = lambda y: 20 + (1 - (y - ymin) / (1 - ymin)) * (h - 20 - mb)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{ml}" y1="{h - mb}" x2="{w - 20}" y2="{h - mb}" stroke="black"/>',
           f'<line x1="{ml}" y1="20" x2="{ml}" y2="{h - mb}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">FLOPs removed (fraction)</text>',
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">min cosine vs dense</text>']
    for i in range(9):
        x = i * 0.1
        out.append(f'<text x="{px(x)}" y="{h - mb + 15}" text-anchor="middle">{x:.1f}</text>')
    for i in range(6):
        y = ymin + i * (1 - ymin) / 5
        out.append(f'<text x="{ml - 5}" y="{py(y) + 4}" text-anchor="end">{y:.2f}</text>')
    for k, ((m, meth), pts) in enumerate(sorted(series.items())):
        c = colors[k % len(colors)]
        pts = sorted(pts)
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5,3"' if meth == "l1" else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{w - 150}" y="{30 + 14 * k}" fill="{c}">{m} {meth}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def write_section(text):
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + (doc[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5")
    ap.add_argument("--methods", default="l1,hessian")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--eval-samples", type=int, default=16)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json")
    ap.add_argument("--svg")
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    rows = []
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for m in a.models.split(","):
            dense = os.path.join(ROOT, ".cache", "models", m + ".onnx")
            cal = make_samples(m, "calib", a.calib_samples, os.path.join(d, m))
            ev = make_samples(m, "eval", a.eval_samples, os.path.join(d, m))
            cal_dirs = [os.path.join(d, m, f"calib_{i}") for i in range(len(cal))]
            shape = shape_arg(ev)
            ref = outputs(dense, ev)
            dense_exe = compile_exe(dense, shape, os.path.join(d, "dense.exe")) if a.latency else None
            for ratio in [float(x) for x in a.ratios.split(",")]:
                for meth in a.methods.split(","):
                    out = os.path.join(d, f"{m}_{meth}.onnx")
                    pipe = f"canonicalize,prune-channels(ratio={ratio},{METHODS[meth]}),canonicalize"
                    info = optimize(m, pipe, cal_dirs if meth != "l1" else [],
                                    shape, out)
                    row = {"model": m, "ratio": ratio, "method": meth, "pipeline": pipe,
                           **fidelity(m, ref, outputs(out, ev)),
                           "gflops_before": info["gflops"][0], "gflops_after": info["gflops"][1],
                           "params_before": info["params"][0], "params_after": info["params"][1],
                           "onnx_bytes_dense": onnx_bytes(dense), "onnx_bytes": onnx_bytes(out)}
                    if a.latency:
                        exe = compile_exe(out, shape, os.path.join(d, "pruned.exe"))
                        row["dense_ms"], row["pruned_ms"] = paired(
                            dense_exe, exe, os.path.join(d, m, "eval_0"), list(ev[0]), a.repeat)
                    rows.append(row)
                    fl = 1 - row["gflops_after"] / row["gflops_before"]
                    top1 = f"{row['top1']:.3f}" if row["top1"] is not None else "–"
                    lat = ""
                    if a.latency:
                        lat = (f" | {row['dense_ms']:.3f} → {row['pruned_ms']:.3f} "
                               f"({1 - row['pruned_ms'] / row['dense_ms']:+.0%}) ".replace("+", "−", 1)
                               if row["pruned_ms"] <= row["dense_ms"] else
                               f" | {row['dense_ms']:.3f} → {row['pruned_ms']:.3f} ")
                    line = (f"| {m} | {ratio} | {meth} | {fl:.0%} | "
                            f"{row['onnx_bytes_dense'] / 1e6:.2f} → {row['onnx_bytes'] / 1e6:.2f} MB | "
                            f"{top1} | {row['cosine']:.4f} | {row['rel_err']:.3f}{lat} |")
                    lines.append(line)
                    print(line, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.svg:
        svg(rows, a.svg)
    if a.write:
        cmd = "python3 benches/prune_sweep.py " + " ".join(sys.argv[1:])
        head = ("| model | ratio | method | FLOPs removed | ONNX size | top-1 agreement | min cosine | rel. L2 err"
                + (" | compiled ms, 1 thread (dense → pruned) |" if a.latency else " |"))
        sep = "|---" * (head.count("|") - 1) + "|"
        text = (f"{SECTION}\n\n"
                f"Generated by `{cmd.replace(' --write', '')}` (rewrites this section). "
                f"Calibration: {a.calib_samples} generated inputs; evaluation: {a.eval_samples} other generated "
                f"inputs, dense vs pruned in onnxruntime. `l1`: filter-norm ranking, no calibration; `hessian`: "
                f"OBS deletion cost from the calibration XᵀX and a least-squares update of the consumers. "
                f"Ratio = fraction of the units of every coupling group removed (`scope=layer`). "
                f"Latency: `pare compile --emit exe`, 1 thread; dense and pruned timed alternately "
                f"three times ({a.repeat} runs each), median of the medians.\n\n"
                + head + "\n" + sep + "\n" + "\n".join(lines) + "\n\n")
        if a.svg:
            text += f"![fidelity vs FLOPs removed]({os.path.relpath(a.svg, os.path.join(ROOT, 'docs'))})\n\n"
        write_section(text)


if __name__ == "__main__":
    main()
