#!/usr/bin/env python3
"""Summarize the real-model test set as Markdown (ops, weights, I/O, opsets).

Loads every model of tests/models/models.json from .cache/models/ and prints per-model
facts: opset imports, op histogram (including If/Loop/Scan subgraphs), initializer vs
Constant-node weights, external data, float16 use, graph inputs/outputs; then the union
of op types over all models. With --write, replaces the generated block of docs/models.md
(between the BEGIN/END model_report markers) instead of printing.

Usage: python3 scripts/model_report.py [--write]
"""
import collections
import json
import os
import sys

try:
    import onnx
    from onnx import TensorProto, helper
except ImportError:
    sys.exit("model_report: error: onnx not installed; run: python3 -m pip install onnx==1.22.0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "tests", "models", "models.json")
DOC = os.path.join(ROOT, "docs", "models.md")
BEGIN, END = "<!-- BEGIN model_report -->", "<!-- END model_report -->"


def walk(graph, depth=0):
    """Yield (node, depth) for graph and all nested subgraphs."""
    for n in graph.node:
        yield n, depth
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from walk(g, depth + 1)


def nbytes(t):
    n = 1
    for d in t.dims:
        n *= d
    return n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type != TensorProto.STRING else 0


def vi_str(vi):
    tt = vi.type.tensor_type
    dims = [str(d.dim_value) if d.dim_value > 0 else (d.dim_param or "?") for d in tt.shape.dim]
    return f"`{vi.name}`: {TensorProto.DataType.Name(tt.elem_type).lower()}[{', '.join(dims)}]"


def report(m, union):
    model = onnx.load(os.path.join(ROOT, ".cache", "models", m["name"] + ".onnx"), load_external_data=False)
    g = model.graph
    hist, sub_nodes, const_types, const_bytes, consts = collections.Counter(), 0, collections.Counter(), 0, 0
    fp16 = set()
    for n, depth in walk(g):
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        hist[op] += 1
        sub_nodes += depth > 0
        if n.op_type == "Constant":
            consts += 1
            for a in n.attribute:
                if a.name == "value":
                    const_types[TensorProto.DataType.Name(a.t.data_type).lower()] += 1
                    const_bytes += nbytes(a.t)
                    if a.t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
                        fp16.add("Constant")
        if n.op_type == "Cast" and any(a.name == "to" and a.i in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for a in n.attribute):
            fp16.add("Cast")
    for op, c in hist.items():
        union[op][0] += 1
        union[op][1] += c
    init_types = collections.Counter(TensorProto.DataType.Name(t.data_type).lower() for t in g.initializer)
    if any(t.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for t in g.initializer):
        fp16.add("initializer")
    external = sum(t.data_location == TensorProto.EXTERNAL for t in g.initializer)
    inits = {t.name for t in g.initializer}
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    lines = [
        f"### {m['name']}",
        "",
        f"{m['description']}",
        "",
        f"- source: `{m['package']}` : `{m['path']}` ({m['size']:,} bytes)",
        f"- ir_version {model.ir_version}, opset imports: {opsets}; producer: {model.producer_name or '-'} {model.producer_version}".rstrip(),
        f"- inputs: {'; '.join(vi_str(i) for i in g.input if i.name not in inits)}",
        f"- outputs: {'; '.join(vi_str(o) for o in g.output)}",
        f"- nodes: {sum(hist.values())} ({sub_nodes} inside subgraphs)",
        f"- initializers: {len(g.initializer)} ({sum(map(nbytes, g.initializer)):,} bytes; "
        f"{', '.join(f'{k} {v}' for k, v in sorted(init_types.items())) or '-'}); external data: {'yes' if external else 'no'}",
        f"- Constant nodes: {consts} ({const_bytes:,} bytes; {', '.join(f'{k} {v}' for k, v in sorted(const_types.items())) or '-'})",
        f"- float16/bfloat16: {', '.join(sorted(fp16)) or 'none'}",
        f"- metadata_props: {', '.join(p.key for p in model.metadata_props) or '-'}",
        f"- ops: {', '.join(f'{op} {c}' for op, c in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))}",
        "",
    ]
    return lines


def main():
    with open(MANIFEST) as f:
        models = json.load(f)["models"]
    union = collections.defaultdict(lambda: [0, 0])
    lines = []
    for m in models:
        if not os.path.exists(os.path.join(ROOT, ".cache", "models", m["name"] + ".onnx")):
            sys.exit(f"model_report: error: {m['name']} not fetched; run python3 scripts/fetch_models.py")
        lines += report(m, union)
    lines += [f"### Op types over all {len(models)} models ({len(union)} distinct)", "",
              "| op | models | nodes |", "|---|---:|---:|"]
    lines += [f"| {op} | {mc} | {nc} |" for op, (mc, nc) in sorted(union.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))]
    text = "\n".join(lines) + "\n"
    if "--write" not in sys.argv:
        print(text, end="")
        return
    with open(DOC) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"model_report: error: {DOC} lacks the {BEGIN} / {END} markers")
    head, rest = doc.split(BEGIN, 1)
    with open(DOC, "w") as f:
        f.write(head + BEGIN + "\n\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"model_report: updated {os.path.relpath(DOC, ROOT)}")


if __name__ == "__main__":
    main()
