#!/usr/bin/env python3
"""Count, per op type, how many ONNX backend node tests use it.

Walks every .cache/onnx-node/<test>/model.onnx (from scripts/fetch_conformance.sh),
including If/Loop/Scan subgraphs, prints "count  domain:op" sorted by count
(descending) and saves the table to .cache/node-test-ops.txt.

Usage: python3 scripts/ops_in_node_tests.py
"""
import collections
import os
import sys

try:
    import onnx
except ImportError:
    sys.exit("ops_in_node_tests: error: onnx not installed; run: python3 -m pip install onnx==1.22.0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = os.path.join(ROOT, ".cache", "onnx-node")
OUT = os.path.join(ROOT, ".cache", "node-test-ops.txt")


def ops(graph):
    """Yield "domain:op" for every node in graph and its subgraphs."""
    for n in graph.node:
        yield f"{n.domain or 'ai.onnx'}:{n.op_type}"
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from ops(g)


def main():
    if not os.path.isdir(NODE_DIR):
        sys.exit(f"ops_in_node_tests: error: {NODE_DIR} missing; run scripts/fetch_conformance.sh first")
    counts, tests = collections.Counter(), 0
    for test in sorted(os.listdir(NODE_DIR)):
        path = os.path.join(NODE_DIR, test, "model.onnx")
        if os.path.isfile(path):
            tests += 1
            counts.update(set(ops(onnx.load(path, load_external_data=False).graph)))
    lines = [f"# {tests} node tests, {len(counts)} distinct op types (count = tests containing the op)"]
    lines += [f"{c:5d}  {op}" for op, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    text = "\n".join(lines) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    print(text, end="")
    print(f"ops_in_node_tests: saved {os.path.relpath(OUT, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
