"""Where CPU users deploy: each model and its conversions on PyTorch (llga, eager), ONNX Runtime (fp32, int8 static
QDQ) and OpenVINO (fp32, int8 NNCF PTQ), batch 1 and 32, one Markdown table on stdout.

For each model, backend and batch size, the original and all its conversions are timed in the same interleaved
rounds (:func:`pfconvert.report.latency.measure`), so each speed-up compares like with like: the original deployed
the same way as the converted model. The int8 models are calibrated on seeded random inputs (random weights: only
the speed is measured here; for accuracy after int8 see ``pfconvert eval --backend ov-int8``). The machine (CPU model,
ISA, threads, versions, load) is printed above the table; progress goes to stderr.

Usage::

    python benchmarks/deploy_cpu.py                        # the full table (long: run it on a quiet machine)
    python benchmarks/deploy_cpu.py --write-docs           # ... and write docs/results/deploy-cpu.md
    python benchmarks/deploy_cpu.py --quick                # one small model at 64 px, few rounds (a smoke run)
    python benchmarks/deploy_cpu.py --models resnet50 --backends ov,ov-int8 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from torch import nn

from pfconvert.report.backends import backend_label, list_backends
from pfconvert.report.latency import LatencyConfig, measure
from pfconvert.report.machine import describe_machine, machine_info
from pfconvert.report.report import SLOWER, compare_timings

try:
    from ._results import add_docs_flag, int_list, ov_int8_precision, write_page  # as benchmarks.NAME (tests)
    from .speed import _build  # the original and its conversions; identity timed as the ceiling
except ImportError:
    from _results import add_docs_flag, int_list, ov_int8_precision, write_page  # run as a script
    from speed import _build

CASES = {"mobilenetv2_100": ["maxpool", "dw-hybrid", "identity"], "efficientnet_lite0": ["maxpool", "dw-hybrid"],
         "resnet50": ["r50-max", "r50-hybrid"], "convnext_tiny": ["maxpool", "dw-hybrid"], "resnet34": ["basic-max"]}
"""Models and their rules: depthwise nets (identity: the ceiling), the paper's ResNet-50 rules, ConvNeXt's 7x7
depthwise convs, and one residual family with two-conv branches."""
QUICK = {"mobilenetv2_050": ["maxpool"]}
BACKENDS = {"cpu": "llga", "cpu-eager": "eager", "ort": "ORT fp32", "ort-int8": "ORT int8", "ov": "OpenVINO fp32",
            "ov-int8": "OpenVINO int8"}
"""Backend -> column title (``cpu`` is deployed with llga, oneDNN Graph)."""


def run(cases: dict[str, list[str]], backends: list[str], config: LatencyConfig,
        build: Callable[[str, list[str], tuple[int, int, int]], dict[str, nn.Module]] = _build) -> list[dict]:
    """Measure every case; one dict per (model, rule, backend, batch size), the original's latency included.
    ``build(model, rules, input_size)`` gives ``{"original": ..., rule: ...}`` (default: each rule's conversion)."""
    rows = []
    for name, rules in cases.items():
        print(f"[{time.strftime('%H:%M:%S')}] building {name} + {', '.join(rules)}", file=sys.stderr)
        models = build(name, rules, config.input_size)
        timings = measure(models, backends, config,
                          progress=lambda t, n=name: print(f"[{time.strftime('%H:%M:%S')}] {n}: {t}", file=sys.stderr))
        for (backend, bs), times in timings.items():
            label = backend_label(backend, timings.methods.get((backend, bs), config.deploy_method))
            for rule in rules:
                row = compare_timings(backend, label, bs, times["original"], times[rule])
                rows.append({"model": name, "rule": rule, **row.__dict__})
    return rows


def markdown(rows: list[dict], backends: list[str], size: int) -> str:
    """One line per model, rule and batch size; a column per backend: speed-up (original ms -> converted ms). The
    original's fastest backend at each batch size is in bold: where a user deploys it, the figure that counts."""
    cols = [BACKENDS.get(b, b) for b in backends]
    out = [f"| model | rule | batch | {' | '.join(cols)} |", "|---|---|---:|" + "---:|" * len(cols)]
    keys = list(dict.fromkeys((r["model"], r["rule"], r["batch_size"]) for r in rows))
    for model, rule, bs in keys:
        mine = {r["backend"]: r for r in rows if (r["model"], r["rule"], r["batch_size"]) == (model, rule, bs)}
        fastest = min(mine.values(), key=lambda r: r["original_ms"])["backend"]
        cells = []
        for b in backends:
            r = mine.get(b)
            if r is None:
                cells.append("")
                continue
            speed = f"{r['speedup']:.2f}x"
            speed = f"**{speed}**" if b == fastest else speed
            mark = " (slower)" if r["verdict"] == SLOWER else ""
            cells.append(f"{speed}{mark} ({r['original_ms']:.1f} -> {r['converted_ms']:.1f} ms)")
        out.append(f"| {model} | {rule} | {bs} | {' | '.join(cells)} |")
    out += ["", f"Input {size}x{size} px, random weights. Each cell: speed-up = original / converted latency on that "
            "backend (median of interleaved rounds after warm-up, the original and every conversion of the model "
            "in the same rounds), then the original's and the converted model's median latency. Bold: the backend "
            "where the original is fastest at that batch size (where a user deploys it). '(slower)': measurably "
            "slower beyond the noise margin. int8 models calibrated on random inputs (speed only). 'identity' is "
            "the ceiling of parameter-free replacements of depthwise convs."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=None, help="comma-separated (default: all)")
    parser.add_argument("--backends", type=lambda t: t.split(","), default=None,
                        help=f"comma-separated (default: those of {', '.join(BACKENDS)} installed here)")
    parser.add_argument("--batch-sizes", type=int_list, default=None, help="default: 1,32")
    parser.add_argument("--img-size", type=int, default=None, help="default: 224")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--runs", type=int, default=None, help="default: 20")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget per cell (>= 5 rounds)")
    parser.add_argument("--quick", action="store_true",
                        help="mobilenetv2_050 + maxpool at 64 px, batch 1 and 4, 3 rounds: a smoke run")
    add_docs_flag(parser, page="deploy-cpu")
    args = parser.parse_args(argv)
    cases = dict(QUICK) if args.quick else {**CASES, **QUICK}
    models = args.models or list(QUICK if args.quick else CASES)
    unknown = [m for m in models if m not in cases]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(cases)}")
    cases = {m: cases[m] for m in models}
    available = list_backends()
    backends = args.backends or [b for b in BACKENDS if b in available]
    missing = [b for b in backends if b not in available]
    if missing:
        parser.error(f"backend(s) {missing} not available here (OpenVINO: pip install 'pfconvert[openvino]')")
    size = args.img_size or (64 if args.quick else 224)
    config = LatencyConfig(batch_sizes=tuple(args.batch_sizes or ([1, 4] if args.quick else [1, 32])),
                           input_size=(3, size, size), runs=args.runs or (3 if args.quick else 20),
                           warmup=1 if args.quick else 3, threads=args.threads,
                           max_seconds=args.max_seconds or (2.0 if args.quick else 40.0), deploy_method="llga",
                           min_runs=3 if args.quick else 5)
    if args.write_docs and args.quick:
        parser.error("--quick is a smoke run; --write-docs writes the full table only")
    machine = describe_machine(machine_info(args.threads)) + ov_int8_precision(backends)
    start = time.perf_counter()
    rows = run(cases, backends, config)
    machine += f", {time.perf_counter() - start:.0f} s total, {time.strftime('%Y-%m-%d')}"
    table = markdown(rows, backends, size)
    sys.stdout.write(f"Machine: {machine}\n\n{table}")
    if args.write_docs:
        write_page(args.docs_page, f"Where CPU users deploy: PyTorch, ONNX Runtime and OpenVINO, fp32 and int8 "
                   f"({size} px)", table, machine)
    return table


if __name__ == "__main__":
    main()
