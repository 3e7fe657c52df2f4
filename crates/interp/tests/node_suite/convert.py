#!/usr/bin/env python3
"""Converts ONNX backend node tests into a JSON form the interpreter's suite test reads
without the ONNX importer (crates/interp/tests/node_suite.rs).

usage: convert.py SRC_DIR OUT_DIR
  SRC_DIR: directory of test_* folders (model.onnx + test_data_set_*/)
  OUT_DIR: receives one <test>.json per convertible test

Subgraph reads of outer values become explicit trailing inputs (the union over an op's
subgraphs, first-seen order), as pare's importer does. Tests using sequences, optionals,
sparse tensors or dtypes pare lacks are skipped.
"""
import glob
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26}


class Skip(Exception):
    pass


def tensor_json(t: onnx.TensorProto):
    if t.data_type not in SUPPORTED:
        raise Skip(f"dtype {t.data_type}")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise Skip("external data")
    shape = [int(d) for d in t.dims]
    arr = numpy_helper.to_array(t)
    if t.data_type == 8:
        return {"dtype": 8, "shape": shape, "strings": [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in arr.ravel().tolist()]}
    if t.data_type in (21, 22, 23):  # packed 4-bit
        if t.data_type == 22:
            codes = arr.astype(np.int8).view(np.uint8).ravel() & 0xF
        elif t.data_type == 21:
            codes = arr.astype(np.uint8).ravel() & 0xF
        else:
            codes = arr.view(np.uint8).ravel() & 0xF
        n = codes.size
        packed = np.zeros((n + 1) // 2, dtype=np.uint8)
        for i, c in enumerate(codes.tolist()):
            packed[i // 2] |= (c & 0xF) << (4 * (i % 2))
        raw = packed.tobytes()
    elif t.data_type in (25, 26):  # packed 2-bit, four per byte, low bits first
        codes = arr.astype(np.int8).view(np.uint8).ravel() & 0x3
        n = codes.size
        packed = np.zeros((n + 3) // 4, dtype=np.uint8)
        for i, c in enumerate(codes.tolist()):
            packed[i // 4] |= (c & 0x3) << (2 * (i % 4))
        raw = packed.tobytes()
    elif t.data_type in (17, 18, 19, 20, 24):
        raw = arr.view(np.uint8).tobytes()
    elif t.data_type == 9:
        raw = arr.astype(np.uint8).tobytes()
    else:
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    return {"dtype": t.data_type, "shape": shape, "hex": raw.hex()}


def type_json(vi):
    tt = vi.type
    if tt.WhichOneof("value") is None:
        return {"name": vi.name, "dtype": None, "shape": None}
    if not tt.HasField("tensor_type"):
        raise Skip("non-tensor value " + vi.name)
    et = tt.tensor_type.elem_type
    if et and et not in SUPPORTED:
        raise Skip(f"dtype {et}")
    shape = None
    if tt.tensor_type.HasField("shape"):
        shape = []
        for d in tt.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
    return {"name": vi.name, "dtype": et or None, "shape": shape}


def constant_tensor(node):
    for a in node.attribute:
        if a.name == "value":
            return tensor_json(a.t)
        if a.name == "value_float":
            return tensor_json(numpy_helper.from_array(np.array(a.f, dtype=np.float32)))
        if a.name == "value_floats":
            return tensor_json(numpy_helper.from_array(np.array(list(a.floats), dtype=np.float32)))
        if a.name == "value_int":
            return tensor_json(numpy_helper.from_array(np.array(a.i, dtype=np.int64)))
        if a.name == "value_ints":
            return tensor_json(numpy_helper.from_array(np.array(list(a.ints), dtype=np.int64)))
        if a.name == "value_string":
            return {"dtype": 8, "shape": [], "strings": [a.s.decode()]}
        if a.name == "value_strings":
            return {"dtype": 8, "shape": [len(a.strings)], "strings": [s.decode() for s in a.strings]}
    raise Skip("unsupported Constant")


def graph_json(g):
    """Returns (json, free variable names in first-seen order)."""
    defined = set(i.name for i in g.input) | set(i.name for i in g.initializer)
    free = []

    def use(name):
        if name and name not in defined and name not in free:
            free.append(name)

    out = {
        "name": g.name,
        "inputs": [type_json(i) for i in g.input if i.name not in set(x.name for x in g.initializer)],
        "consts": [{"name": t.name, "tensor": tensor_json(t)} for t in g.initializer],
        "nodes": [],
        "outputs": [o.name for o in g.output],
    }
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            raise Skip(f"domain {n.domain}")
        if n.op_type == "Constant":
            out["consts"].append({"name": n.output[0], "tensor": constant_tensor(n)})
            defined.add(n.output[0])
            continue
        attrs = []
        caps = []
        subs = []
        for a in n.attribute:
            k = a.type
            if k == onnx.AttributeProto.FLOAT:
                attrs.append([a.name, "float", a.f])
            elif k == onnx.AttributeProto.INT:
                attrs.append([a.name, "int", a.i])
            elif k == onnx.AttributeProto.STRING:
                attrs.append([a.name, "string", a.s.decode()])
            elif k == onnx.AttributeProto.TENSOR:
                attrs.append([a.name, "tensor", tensor_json(a.t)])
            elif k == onnx.AttributeProto.GRAPH:
                gj, gfree = graph_json(a.g)
                for c in gfree:
                    if c not in caps:
                        caps.append(c)
                entry = [a.name, "graph", gj]
                attrs.append(entry)
                subs.append(gj)
            elif k == onnx.AttributeProto.FLOATS:
                attrs.append([a.name, "floats", list(a.floats)])
            elif k == onnx.AttributeProto.INTS:
                attrs.append([a.name, "ints", list(a.ints)])
            elif k == onnx.AttributeProto.STRINGS:
                attrs.append([a.name, "strings", [s.decode() for s in a.strings]])
            else:
                raise Skip(f"attribute kind {k}")
        inputs = list(n.input)
        while inputs and inputs[-1] == "":
            inputs.pop()
        for gj in subs:
            formal = [i for i in gj["inputs"] if i["name"] not in caps]
            by_name = {i["name"]: i for i in gj["inputs"]}
            gj["inputs"] = formal + [by_name.get(c, {"name": c, "dtype": None, "shape": None}) for c in caps]
            gj["num_captures"] = len(caps)
        inputs += caps
        for i in inputs:
            use(i)
        out["nodes"].append({"name": n.name, "op": n.op_type, "inputs": inputs, "outputs": list(n.output), "attrs": attrs})
        for o in n.output:
            defined.add(o)
    for o in out["outputs"]:
        use(o)
    return out, free


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return tensor_json(t)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    ok = skipped = 0
    for d in sorted(glob.glob(os.path.join(src, "test_*"))):
        name = os.path.basename(d)
        try:
            m = onnx.load(os.path.join(d, "model.onnx"))
            gj, free = graph_json(m.graph)
            if free:
                raise Skip("undefined names " + ",".join(free))
            cases = []
            for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
                ins = [load_pb(p) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))]
                outs = [load_pb(p) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))]
                cases.append({"inputs": ins, "outputs": outs})
            opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
            with open(os.path.join(dst, name + ".json"), "w") as f:
                json.dump({"name": name, "opset": opset, "graph": gj, "cases": cases}, f)
            ok += 1
        except Skip as e:
            skipped += 1
            print(f"skip {name}: {e}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001
            skipped += 1
            print(f"skip {name}: error {type(e).__name__}: {e}", file=sys.stderr)
    print(f"converted {ok}, skipped {skipped}")


if __name__ == "__main__":
    main()
