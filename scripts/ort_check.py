#!/usr/bin/env python3
"""Runs ONNX models with onnxruntime on ONNX test_data_set fixtures and checks the outputs.

Usage: ort_check.py [--rtol R] MODEL.onnx=FIXTURE_DIR [...]
Each FIXTURE_DIR holds test_data_set_N/{input,output}_K.pb. Floats must agree within R (default
1e-4) of the output's scale, integers exactly. Exits non-zero on any mismatch or error.
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
    if len(args) >= 2 and args[0] == "--rtol":
        rtol = float(args[1])
        args = args[2:]
    for arg in args:
        model, fixtures = arg.split("=", 1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        worst = 0.0
        for ds in sorted(glob.glob(os.path.join(fixtures, "test_data_set_*"))):
            ins = load(ds, "input_")
            exp = load(ds, "output_")
            got = sess.run(None, dict(zip(names, ins)))
            for k, (e, g) in enumerate(zip(exp, got)):
                if e.shape != g.shape or e.dtype != g.dtype:
                    print(f"FAIL {model} {ds} output {k}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}")
                    ok = False
                    continue
                if np.issubdtype(e.dtype, np.floating):
                    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-6)
                    err = float(np.max(np.abs(e.astype(np.float64) - g))) if e.size else 0.0
                    worst = max(worst, err / scale)
                    if err > rtol * scale:
                        print(f"FAIL {model} {ds} output {k}: max abs err {err:.3e} (scale {scale:.3e})")
                        ok = False
                elif not np.array_equal(e, g):
                    print(f"FAIL {model} {ds} output {k}: integer outputs differ")
                    ok = False
        print(f"ok   {os.path.basename(model):<32} onnxruntime max|err|/scale {worst:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
