#!/usr/bin/env python3
"""Generate reference fixtures for the real-model test set.

For every model in tests/models/models.json (fetched by scripts/fetch_models.py) this
writes tests/models/<name>/test_data_set_{0,1,2}/{input,output}_K.pb (ONNX TensorProto,
`name` = graph input/output name, exactly like the ONNX backend node tests) and
tests/models/<name>/meta.json. Inputs are deterministic (numpy RNG seeded from the model
name and dataset index) and follow the manifest's "inputs" spec; outputs come from
onnxruntime, CPUExecutionProvider, ORT_DISABLE_ALL, 1 thread.

A model is regenerated only when its fixtures are missing/incomplete, its pinned sha256
changed, or --force is given.

Usage: python3 scripts/make_fixtures.py [--force] [NAME ...]
"""
import argparse
import json
import os
import re
import shutil
import sys
import zlib

try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
except ImportError as e:
    sys.exit(f"make_fixtures: error: {e}; run: python3 -m pip install onnx==1.22.0 onnxruntime numpy")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "tests", "models", "models.json")
CACHE = os.path.join(ROOT, ".cache", "models")
NUM_DATASETS = 3


def die(msg):
    sys.exit(f"make_fixtures: error: {msg}")


def text_image(rng, h, w):
    """Grey page with dark stroke 'characters' in text lines (one tall line if h <= 48)."""
    img = rng.uniform(180, 250) + rng.normal(0, 6, (h, w))
    y = int(rng.integers(2, 8)) if h > 48 else h // 6
    while y < h - 6:
        lh = int(rng.integers(8, 18)) if h > 48 else int(rng.integers(h // 2, 3 * h // 4))
        x, end = int(rng.integers(2, 12)), w - int(rng.integers(2, w // 4))
        while x < end and y + lh <= h:
            cw = int(rng.integers(lh // 2, lh + 2))
            for _ in range(rng.integers(2, 5)):  # a few horizontal / vertical strokes per character
                ink = rng.uniform(10, 70)
                if rng.random() < 0.5:
                    yy = y + int(rng.integers(0, lh))
                    img[yy:yy + 2, x:x + cw] = ink
                else:
                    xx = x + int(rng.integers(0, cw))
                    img[y:y + lh, xx:xx + 2] = ink
            x += cw + int(rng.integers(1, 4))
        y += lh + int(rng.integers(4, 14))
    return np.clip(np.round(img), 0, 255)


def gen(spec, dtype, rng, feeds, prev_out):
    """Make one input array from its manifest spec."""
    kind, shape = spec["kind"], spec.get("shape")
    if kind == "image":  # synthetic text picture (uint8 values), then (p/255 - mean) / std
        c = shape[1]
        pix = np.stack([text_image(rng, shape[2], shape[3]) for _ in range(shape[0])])[:, None].repeat(c, 1)
        mean = np.array(spec["mean"]).reshape(1, c, 1, 1)
        std = np.array(spec["std"]).reshape(1, c, 1, 1)
        x = (pix / 255.0 - mean) / std
    elif kind == "audio":  # a few tones + noise in [-1, 1]
        t = np.arange(shape[-1]) / 16000.0
        f = rng.uniform(80, 4000, shape[:-1] + [3, 1])
        x = (np.sin(2 * np.pi * f * t) * rng.uniform(0.05, 0.3, f.shape)).sum(-2)
        x = np.clip(x + rng.normal(0, 0.02, shape), -1, 1)
    elif kind == "zeros":  # recurrent state: zeros in dataset 0, then the previous dataset's output
        x = prev_out[spec["carry"]] if prev_out is not None and "carry" in spec else np.zeros(shape)
    elif kind == "const":
        x = np.array(spec["value"])
    elif kind == "tokens":  # [CLS] random-word-ids [SEP], last row padded with `pad` zeros
        b, s = shape
        x = rng.integers(1000, spec["vocab"], shape)
        x[:, 0] = 101
        x[:, -1] = 102
        pad = spec.get("pad", 0)
        if pad:
            x[-1, s - pad - 1] = 102
            x[-1, s - pad:] = 0
    elif kind == "mask":  # 1 for real tokens, 0 for padding
        x = (feeds[spec["ids"]] != 0)
    else:
        die(f"unknown input kind {kind!r}")
    return np.asarray(x).astype(dtype)


def check_shape(name, arr, vi):
    dims = vi.type.tensor_type.shape.dim
    static = [d.dim_value if d.dim_value > 0 else None for d in dims]
    if len(static) != arr.ndim or any(s is not None and s != a for s, a in zip(static, arr.shape)):
        die(f"input {name}: generated shape {list(arr.shape)} does not fit model shape {static}")


def save(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(arr, name).SerializeToString())


def make(m, out_dir):
    path = os.path.join(CACHE, m["name"] + ".onnx")
    if not os.path.exists(path):
        die(f"{path} missing; run python3 scripts/fetch_models.py first")
    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    tmp = out_dir + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    meta = {"model": m["name"], "sha256": m["sha256"], "onnxruntime": ort.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "session": "CPUExecutionProvider, ORT_DISABLE_ALL, 1 thread", "datasets": []}
    prev_out = None
    for k in range(NUM_DATASETS):
        rng = np.random.default_rng(zlib.crc32(f"{m['name']}/{k}".encode()))
        specs = {**m["inputs"], **m.get("datasets", {}).get(str(k), {})}
        feeds = {}
        for vi in graph_inputs:
            if vi.name not in specs:
                die(f"{m['name']}: manifest has no spec for input {vi.name!r}")
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            feeds[vi.name] = gen(specs[vi.name], dtype, rng, feeds, prev_out)
            check_shape(vi.name, feeds[vi.name], vi)
        outs = sess.run(None, feeds)
        names = [o.name for o in sess.get_outputs()]
        prev_out = dict(zip(names, outs))
        ds = os.path.join(tmp, f"test_data_set_{k}")
        os.makedirs(ds)
        for i, (name, arr) in enumerate(feeds.items()):
            save(os.path.join(ds, f"input_{i}.pb"), arr, name)
        for i, (name, arr) in enumerate(zip(names, outs)):
            save(os.path.join(ds, f"output_{i}.pb"), arr, name)
        desc = lambda d: {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in d.items()}
        meta["datasets"].append({"inputs": desc(feeds), "outputs": desc(prev_out)})
    text = re.sub(r"\[\s+([\d,\s]+?)\s+\]", lambda g: "[" + " ".join(g.group(1).split()) + "]", json.dumps(meta, indent=1))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        f.write(text + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)


def up_to_date(m, out_dir):
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if meta.get("sha256") != m["sha256"] or len(meta.get("datasets", [])) != NUM_DATASETS:
        return False
    for k, ds in enumerate(meta["datasets"]):
        for kind in ("input", "output"):
            for i in range(len(ds[kind + "s"])):
                if not os.path.exists(os.path.join(out_dir, f"test_data_set_{k}", f"{kind}_{i}.pb")):
                    return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="regenerate even if fixtures exist")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    with open(MANIFEST) as f:
        models = json.load(f)["models"]
    unknown = set(args.names) - {m["name"] for m in models}
    if unknown:
        die(f"unknown model(s) {sorted(unknown)}")
    for m in models:
        if args.names and m["name"] not in args.names:
            continue
        out_dir = os.path.join(os.path.dirname(MANIFEST), m["name"])
        if not args.force and up_to_date(m, out_dir):
            print(f"make_fixtures: {m['name']}: up to date")
            continue
        make(m, out_dir)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs)
        print(f"make_fixtures: {m['name']}: wrote {NUM_DATASETS} datasets ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
