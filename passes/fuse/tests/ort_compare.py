#!/usr/bin/env python3
"""Runs ONNX models in onnxruntime on test_data_set fixtures and compares with the stored outputs.

Usage: ort_compare.py TOL MODEL.onnx=FIXTURE_DIR[=ORIGINAL.onnx] [...]
Floats must agree within TOL of each output's scale (max |err| / max |expected|), integers
exactly. The session matches the fixtures' (CPU, graph optimizations off, one thread), so the
comparison measures the model change, not onnxruntime's own rewrites. When ORIGINAL is given,
the bound is raised to the distance between the fixtures and onnxruntime running ORIGINAL with
all of its own graph optimizations (its Conv+BatchNormalization folding and friends): a
rewrite that onnxruntime itself makes cannot be held to a tighter bound than onnxruntime's.
Exits non-zero on a mismatch.
"""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load(dir_, prefix):
    files = sorted(glob.glob(os.path.join(dir_, f"{prefix}*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return out


def session(model, level):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = level
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(sess, ds):
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, load(ds, "input_"))))


def noise(original, fixtures):
    """Worst max|err|/scale of onnxruntime's optimized run of the original model."""
    sess = session(original, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    worst = 0.0
    for ds in sorted(glob.glob(os.path.join(fixtures, "test_data_set_*"))):
        for e, g in zip(load(ds, "output_"), run(sess, ds)):
            if np.issubdtype(e.dtype, np.floating) and e.size:
                scale = max(float(np.max(np.abs(e))), 1e-6)
                worst = max(worst, float(np.max(np.abs(e.astype(np.float64) - g))) / scale)
    return worst


def main():
    base_tol = float(sys.argv[1])
    ok = True
    for arg in sys.argv[2:]:
        model, fixtures, *original = arg.split("=")
        ref_noise = noise(original[0], fixtures) if original else 0.0
        tol = max(base_tol, ref_noise)
        sess = session(model, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        ops = sorted({n.op_type for n in onnx.load(model, load_external_data=False).graph.node})
        worst = 0.0
        for ds in sorted(glob.glob(os.path.join(fixtures, "test_data_set_*"))):
            got = run(sess, ds)
            for k, (e, g) in enumerate(zip(load(ds, "output_"), got)):
                if e.shape != g.shape or e.dtype != g.dtype:
                    print(f"FAIL {model} {ds} output {k}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}")
                    ok = False
                elif np.issubdtype(e.dtype, np.floating):
                    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-6)
                    err = float(np.max(np.abs(e.astype(np.float64) - g))) if e.size else 0.0
                    worst = max(worst, err / scale)
                    if err > tol * scale:
                        print(f"FAIL {model} {ds} output {k}: max|err|/scale {err / scale:.3e} > {tol:.3e}")
                        ok = False
                elif not np.array_equal(e, g):
                    print(f"FAIL {model} {ds} output {k}: integer outputs differ")
                    ok = False
        print(f"{'ok  ' if worst <= tol else 'FAIL'} {os.path.basename(model):<28} max|err|/scale "
              f"{worst:.2e} (bound {tol:.2e}; onnxruntime's own optimizations on the original: "
              f"{ref_noise:.2e}); Attention node: {'Attention' in ops}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
