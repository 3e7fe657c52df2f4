#!/usr/bin/env python3
"""Runs an original and a transformed ONNX model in onnxruntime on the same inputs and checks
that their outputs agree.

Usage: ort_compare.py [--rtol R] [--max-rtol M] ORIGINAL.onnx=CANDIDATE.onnx=FIXTURE_DIR [...]
FIXTURE_DIR holds test_data_set_N/input_K.pb. Both models run with the same session options
(1 thread, graph optimizations off, so the comparison sees pare's rewrites and not
onnxruntime's), and the candidate is also run once with all optimizations on to show that
onnxruntime accepts it as deployed. For float outputs the relative error ||cand - orig|| /
||orig|| (L2 over the whole output) must be at most R (default 1e-5) and the largest elementwise
error at most M (default 5e-5) times the output's largest magnitude; integers must be equal.
(Why two bounds: folding BatchNormalization into a convolution reorders float operations; on
ocr-det that moves single sigmoid outputs by 2e-5 while the relative L2 error stays 1.6e-6, and
onnxruntime's own graph optimizer moves the same outputs by 2.6e-5.)
Exits non-zero on any mismatch or error.
"""
import glob
import os
import sys

import numpy as np
import onnxruntime as ort

from ort_check import load


def session(path, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    args = sys.argv[1:]
    rtol, max_rtol = 1e-5, 5e-5
    while len(args) >= 2 and args[0] in ("--rtol", "--max-rtol"):
        if args[0] == "--rtol":
            rtol = float(args[1])
        else:
            max_rtol = float(args[1])
        args = args[2:]
    ok = True
    for arg in args:
        orig, cand, fixtures = arg.split("=", 2)
        so = session(orig, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        sc = session(cand, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        deployed = session(cand, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        names_o = [i.name for i in so.get_inputs()]
        names_c = [i.name for i in sc.get_inputs()]
        worst, worst_l2 = 0.0, 0.0
        for ds in sorted(glob.glob(os.path.join(fixtures, "test_data_set_*"))):
            ins = load(ds, "input_")
            exp = so.run(None, dict(zip(names_o, ins)))
            got = sc.run(None, dict(zip(names_c, ins)))
            deployed.run(None, dict(zip(names_c, ins)))
            for k, (e, g) in enumerate(zip(exp, got)):
                if e.shape != g.shape or e.dtype != g.dtype:
                    print(f"FAIL {cand} {ds} output {k}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}")
                    ok = False
                elif np.issubdtype(e.dtype, np.floating):
                    e64 = e.astype(np.float64)
                    scale = max(float(np.max(np.abs(e64))) if e.size else 0.0, 1e-6)
                    err = float(np.max(np.abs(e64 - g))) if e.size else 0.0
                    l2 = float(np.linalg.norm(e64 - g) / max(np.linalg.norm(e64), 1e-30)) if e.size else 0.0
                    worst = max(worst, err / scale)
                    worst_l2 = max(worst_l2, l2)
                    if l2 > rtol or err > max_rtol * scale:
                        print(f"FAIL {cand} {ds} output {k}: relative L2 error {l2:.3e} (bound {rtol:.0e}), "
                              f"max abs err {err:.3e} (scale {scale:.3e}, bound {max_rtol:.0e})")
                        ok = False
                elif not np.array_equal(e, g):
                    print(f"FAIL {cand} {ds} output {k}: integer outputs differ")
                    ok = False
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(cand):<32} vs original in onnxruntime: "
              f"relative L2 {worst_l2:.2e}, max|err|/scale {worst:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
