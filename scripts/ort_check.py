#!/usr/bin/env python3
"""Runs ONNX models with onnxruntime on ONNX test_data_set fixtures and checks the outputs.

Usage: ort_check.py [--rtol R] [--opt all|extended|basic|disable] MODEL.onnx=FIXTURE_DIR [...]
Each FIXTURE_DIR holds test_data_set_N/{input,output}_K.pb. Floats must agree within R (default
1e-4) of the output's scale, integers exactly. --opt sets onnxruntime's graph optimization level
(default all, as deployed; `disable` compares the model as written: with optimizations on,
onnxruntime rewrites DequantizeLinear→MatMul into kernels that quantize the activations too).
Exits non-zero on any mismatch or error.
"""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load(dir_, prefix):
    files = sorted(glob.glob(os.path.join(dir_, f"{prefix}*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return out


def main():
    ok = True
    args = sys.argv[1:]
    rtol = 1e-4
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    level = "all"
    while len(args) >= 2 and args[0] in ("--rtol", "--opt"):
        if args[0] == "--rtol":
            rtol = float(args[1])
        else:
            level = args[1]
            if level not in levels:
                sys.exit(f"--opt must be one of {', '.join(levels)}")
        args = args[2:]
    for arg in args:
        model, fixtures = arg.split("=", 1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = levels[level]
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        worst = 0.0
        model_ok = True
        for ds in sorted(glob.glob(os.path.join(fixtures, "test_data_set_*"))):
            ins = load(ds, "input_")
            exp = load(ds, "output_")
            got = sess.run(None, dict(zip(names, ins)))
            for k, (e, g) in enumerate(zip(exp, got)):
                if e.shape != g.shape or e.dtype != g.dtype:
                    print(f"FAIL {model} {ds} output {k}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}")
                    model_ok = False
                    continue
                if np.issubdtype(e.dtype, np.floating):
                    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-6)
                    err = float(np.max(np.abs(e.astype(np.float64) - g))) if e.size else 0.0
                    worst = max(worst, err / scale)
                    if err > rtol * scale:
                        print(f"FAIL {model} {ds} output {k}: max abs err {err:.3e} (scale {scale:.3e})")
                        model_ok = False
                elif not np.array_equal(e, g):
                    print(f"FAIL {model} {ds} output {k}: integer outputs differ")
                    model_ok = False
        ok = ok and model_ok
        print(f"{'ok  ' if model_ok else 'FAIL'} {os.path.basename(model):<32} onnxruntime "
              f"({level} optimizations) max|err|/scale {worst:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
