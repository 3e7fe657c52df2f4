#!/usr/bin/env python3
"""Times `pare opt --passes canonicalize` on every real model (release build) and reports node
counts, the median pipeline time and the slowest sub-passes; with --write, replaces the
"Canonicalize pass times" section of docs/benchmarks.md.

Usage: cargo build --release -p pare-cli && python3 benches/pass_times.py [--repeat 5] [--write]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARE = os.path.join(ROOT, "target", "release", "pare")
SECTION = "## Canonicalize pass times"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    models = json.load(open(os.path.join(ROOT, "tests", "models", "models.json")))["models"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            name = m["name"]
            model = os.path.join(ROOT, ".cache", "models", f"{name}.onnx")
            times, subs, report = [], {}, None
            for _ in range(a.repeat):
                rep = os.path.join(tmp, "r.json")
                subprocess.run([PARE, "opt", model, "--passes", "canonicalize", "-o",
                                os.path.join(tmp, "o.onnx"), "--report", rep,
                                "--calib", os.path.join(ROOT, "tests", "models", name)],
                               check=True, capture_output=True)
                report = json.load(open(rep))
                step = report["steps"][0]
                times.append(step["time_ms"])
                for s in step["steps"]:
                    subs.setdefault(s["spec"], []).append(s["time_ms"])
            slow = sorted(((statistics.median(v), k) for k, v in subs.items()), reverse=True)[:3]
            rows.append((name, report["before"]["nodes"], report["after"]["nodes"],
                         report["before"]["flops"], report["after"]["flops"],
                         statistics.median(times), step["runs"],
                         ", ".join(f"{k} {t:.2f}" for t, k in slow)))
    lines = [SECTION, "",
             "Wall time of the `canonicalize` pipeline (every sub-pass to a fixpoint, verify-each off) "
             "in `pare opt`, release build, 1 process, median of "
             f"{a.repeat} runs. FLOPs are counted at the shapes of test_data_set_0.",
             "",
             "Reproduce: `cargo build --release -p pare-cli && python3 benches/pass_times.py --write`",
             "",
             "| model | nodes before → after | GFLOP before → after | canonicalize (ms) | iterations | slowest passes (ms) |",
             "|---|---|---|---:|---:|---|"]
    for n, nb, na, fb, fa, t, it, slow in rows:
        lines.append(f"| {n} | {nb} → {na} | {fb/1e9:.4f} → {fa/1e9:.4f} | {t:.1f} | {it} | {slow} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.write:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        doc = open(path).read()
        if SECTION in doc:
            start = doc.index(SECTION)
            rest = doc[start + len(SECTION):]
            nxt = rest.find("\n## ")
            doc = doc[:start] + text + (rest[nxt + 1:] if nxt >= 0 else "")
            if nxt >= 0:
                doc = doc[:start] + text + "\n" + rest[nxt + 1:]
        else:
            doc = doc.rstrip() + "\n\n" + text
        open(path, "w").write(doc)


if __name__ == "__main__":
    main()
