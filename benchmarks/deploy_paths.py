"""PyTorch CPU deploy paths side by side: each model (original and converted) through every path of
:func:`pfconvert.deploy.optimize_for_cpu`, all timed in the same interleaved rounds, one Markdown table on stdout.

Answers "which path should I deploy with?" and "does the conversion pay on that path?". Progress goes to stderr.

Usage::

    python benchmarks/deploy_paths.py                                  # the three README models, batch 1 and 32
    python benchmarks/deploy_paths.py --models mobilenetv2_100 --methods llga,jit,eager --batch-sizes 1
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import pfconvert
from pfconvert.conversion.models import create_model
from pfconvert.deploy import optimize_for_cpu
from pfconvert.report.latency import LatencyConfig, median_ms, time_rounds, torch_threads
from pfconvert.report.machine import describe_machine, machine_info

try:
    from ._results import add_docs_flag, int_list, write_page  # imported as benchmarks.deploy_paths (tests, python -m)
except ImportError:
    from _results import add_docs_flag, int_list, write_page  # run as a script: its directory is sys.path[0]

RULES = {"mobilenetv2_100": "maxpool", "efficientnet_lite0": "maxpool", "resnet50": "r50-max"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=list(RULES))
    parser.add_argument("--methods", type=lambda t: t.split(","), default=["llga", "jit", "eager"])
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 32])
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--runs", type=int, default=10)
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in RULES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(RULES)}")
    start = time.perf_counter()
    lines = []
    with torch_threads(args.threads):
        machine = describe_machine(machine_info(args.threads))
        for name in args.models:
            original = create_model(name).eval()
            converted, _ = pfconvert.convert(original, RULES[name], input_size=(3, 224, 224))
            models = {"original": original, RULES[name]: converted.eval()}
            for bs in args.batch_sizes:
                print(f"[{time.strftime('%H:%M:%S')}] {name}, batch {bs}: building", file=sys.stderr)
                x = torch.randn(bs, 3, 224, 224)
                runners = {}
                for method in args.methods:
                    for key, model in models.items():
                        fast = optimize_for_cpu(model, x, method=method)
                        runners[(method, key)] = lambda f=fast, x=x: f(x)
                with torch.inference_mode():
                    times = time_rounds(runners, LatencyConfig(runs=args.runs, warmup=2, max_seconds=60.0))
                ms = {k: median_ms(v) for k, v in times.items()}
                best = min(ms[(m, "original")] for m in args.methods)
                for method in args.methods:
                    o, c = ms[(method, "original")], ms[(method, RULES[name])]
                    lines.append(f"| {name} | {RULES[name]} | {bs} | {method} | {o:.2f} | {c:.2f} | {o / c:.2f}x "
                                 f"| {best / o:.2f}x |")
    machine += f", {time.perf_counter() - start:.0f} s total"
    table = "\n".join([
        "| model | rule | batch | deploy path | original ms | converted ms | speed-up on this path "
        "| original vs its fastest path |", "|---|---|---:|---|---:|---:|---:|---:|", *lines, "",
        "Median of interleaved rounds (every path and model of a batch size in the same rounds), 224 px input; "
        "speed-up = original / converted on the same path; the last column is the original's fastest path over "
        "this one (1.00x = this is the fastest)."])
    print(f"Machine: {machine}, {time.strftime('%Y-%m-%d')}\n\n{table}")
    if args.write_docs:
        write_page("deploy-paths", "PyTorch CPU deploy paths side by side (224 px)", table, machine)


if __name__ == "__main__":
    main()
