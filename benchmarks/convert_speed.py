"""Start-up and conversion time, in one run: what a user waits for before anything is trained or measured.

- Command-line start-up: ``pfconvert --help``, ``pfconvert rules``, a usage error and an unknown rule, each a fresh
  process (median of ``--repeats`` runs).
- In-process conversion: ``pfconvert.convert(model, rule, inplace=True)`` on an already built model (tracing,
  matching, building and checking the replacements, the final check: the conversion itself), and
  ``pfconvert.convert(model, rule)`` (the default: a converted copy, so the original's weights are copied first);
  medians of ``--repeats`` calls after one warm-up. Tracing and the checks run on meta tensors, so the cost does not
  grow with the input resolution; the copy grows with the parameter count. Also how long ``timm.create_model`` took,
  for scale.
- ``pfconvert convert MODEL --rule RULE`` end to end in a fresh process (imports, building, converting, counting MACs
  at the model's input size, writing the artifact), once.

Usage::

    python benchmarks/convert_speed.py                 # five models, about 3 minutes on 2 cores
    python benchmarks/convert_speed.py --models mobilenetv2_100 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from ._results import add_docs_flag, write_page  # imported as benchmarks.convert_speed (tests, python -m)
except ImportError:
    from _results import add_docs_flag, write_page  # run as a script: its directory is sys.path[0]

CASES = {"mobilenetv2_100": "maxpool", "resnet50": "r50-max", "convnext_base": "maxpool",
         "vit_base_patch16_224": "vit-max", "efficientnet_b7": "maxpool"}
CLI = [str(Path(sys.executable).with_name("pfconvert"))]  # the console script a user types
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # bytecode cached, as after pip install


def _wall(argv: list[str], expect_ok: bool | None = True) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=ENV)
    seconds = time.perf_counter() - start
    if expect_ok is not None and (done.returncode == 0) != expect_ok:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]}")
    return seconds


def startup(repeats: int) -> list[tuple[str, float]]:
    """Median wall time of each start-up command in fresh processes."""
    cases = [("pfconvert --help", [*CLI, "--help"], True), ("pfconvert rules", [*CLI, "rules"], True),
             ("pfconvert convert (usage error: no MODEL)", [*CLI, "convert"], False),
             ("pfconvert convert resnet50 --rule nope (unknown rule)", [*CLI, "convert", "resnet50", "--rule", "nope"],
              False)]
    _wall([*CLI, "--help"])  # first run: Python's bytecode caches
    return [(label, statistics.median(_wall(argv, ok) for _ in range(repeats))) for label, argv, ok in cases]


def in_process(name: str, rule: str, repeats: int) -> tuple[float, float, float, tuple[int, int, int], int]:
    """(create_model seconds, median in-place convert seconds, median convert-a-copy seconds, input size, layers
    replaced)."""
    import copy

    import pfconvert

    start = time.perf_counter()
    model = pfconvert.create_model(name)
    built = time.perf_counter() - start
    _, record = pfconvert.convert(model, rule)  # warm-up: first calls build caches
    in_place, copied = [], []
    for _ in range(repeats):
        fresh = copy.deepcopy(model)
        start = time.perf_counter()
        pfconvert.convert(fresh, rule, inplace=True)
        in_place.append(time.perf_counter() - start)
        del fresh
        start = time.perf_counter()
        pfconvert.convert(model, rule)
        copied.append(time.perf_counter() - start)
    return built, statistics.median(in_place), statistics.median(copied), record.input_size, len(record.replacements)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(CASES)}")
    from pfconvert.report.machine import describe_machine, machine_info

    begin = time.perf_counter()
    print("start-up...", file=sys.stderr)
    starts = startup(args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"{name}...", file=sys.stderr)
            built, in_place, copied, size, replaced = in_process(name, CASES[name], args.repeats)
            cli = _wall([*CLI, "convert", name, "--rule", CASES[name], "--out", str(Path(tmp) / name)])
            rows.append((name, CASES[name], size, replaced, built, in_place, copied, cli))
    base = next((r[5] for r in rows if r[0] == "mobilenetv2_100"), None)
    lines = ["| command | wall s |", "|---|---:|", *[f"| `{label}` | {s:.2f} |" for label, s in starts], "",
             "| model | rule | input | layers replaced | timm.create_model s | convert in place s | vs mobilenetv2_100 "
             "| convert a copy s | `pfconvert convert` (fresh process) s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, rule, size, replaced, built, in_place, copied, cli in rows:
        ratio = f"{in_place / base:.1f}x" if base else "-"
        lines.append(f"| {name} | {rule} | {'x'.join(map(str, size))} | {replaced} | {built:.2f} | {in_place:.2f} | "
                     f"{ratio} | {copied:.2f} | {cli:.1f} |")
    lines += ["", f"Start-up: median of {args.repeats} fresh processes of the `pfconvert` console script (Python's "
              "bytecode cache on, as after `pip install`; the first run, which fills it, is not counted). "
              f"Convert: medians of {args.repeats} calls of `pfconvert.convert` on a built model, after one warm-up: "
              "in place (`inplace=True`), and on a copy (the default; the copy of the weights included). `pfconvert "
              "convert`: one fresh process, imports and MAC counting (real tensors, at the input size shown) "
              "included."]
    table = "\n".join(lines)
    machine = f"{describe_machine(machine_info())}, {time.perf_counter() - begin:.0f} s total"
    print(f"Machine: {machine}\n\n{table}")
    if args.write_docs:
        write_page("convert-speed", "Start-up and conversion time", table, machine)


if __name__ == "__main__":
    main()
