#!/usr/bin/env python3
"""Compile time of a 100 M-parameter model.

No model of that size ships in a PyPI wheel, so this builds one: an MLP of 8 MatMul+Add+Relu
layers of width 3584 (102.8 M f32 parameters, 411 MB of external data) with a symbolic batch,
then times `pare compile --emit so --shape N=8` on it (median of --repeat runs) and prints the
phase split that pare reports plus its peak RSS.

    python3 benches/compile_100m.py [--pare target/release/pare] [--repeat 3]
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH, LAYERS = 3584, 8


def build(path):
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(LAYERS):
        w = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.sqrt(WIDTH)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(WIDTH, np.float32), f"b{i}")]
        y = f"r{i}" if i < LAYERS - 1 else "y"
        nodes += [
            helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [y]),
        ]
        x = y
    g = helper.make_graph(
        nodes,
        "mlp100m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path, save_as_external_data=True, location=os.path.basename(path) + ".data")
    return sum(int(np.prod(i.dims)) for i in inits)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--pare", default=os.path.join(root, "target", "release", "pare"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "mlp100m.onnx")
        params = build(model)
        walls, last = [], ""
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            r = subprocess.run(
                [a.pare, "compile", model, "--emit", "so", "-o", os.path.join(d, "m.so"), "--shape", "N=8"],
                capture_output=True,
                text=True,
            )
            walls.append(time.perf_counter() - t0)
            if r.returncode != 0:
                sys.exit(f"pare compile failed:\n{r.stderr}")
            last = r.stdout + r.stderr
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        phases = re.search(r"time: .*", last)
        print(f"model: MLP {LAYERS}x{WIDTH}, {params / 1e6:.1f} M parameters")
        print(f"compile --emit so: median {statistics.median(walls):.2f} s over {a.repeat} runs "
              f"(min {min(walls):.2f}, max {max(walls):.2f}); peak RSS {rss:.0f} MB")
        if phases:
            print(f"pare's own split (last run): {phases.group(0)}")


if __name__ == "__main__":
    main()
