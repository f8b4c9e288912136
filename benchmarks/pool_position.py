"""Where the pool goes in an inverted residual: at the depthwise conv (the ``maxpool`` rule) or at the block's narrow
input, before the 1x1 expansion. A speed probe, not a rule yet.

In MobileNetV2 / EfficientNet blocks the depthwise conv runs on the expanded tensor (6x the block's channels). On an
int8 CPU runtime both the depthwise conv and the max-pool that replaces it are one memory-bound pass over that wide
tensor, so the pool costs as much as the conv it replaces (docs/results/ov-profile*.md). Pooling the block's narrow
input instead (``MaxPool -> 1x1 expand -> (no depthwise) -> 1x1 project``) reads 1/6 of the bytes, and a stride-2
block then also runs its expansion at the reduced resolution. This script builds that variant from timm's blocks by
module surgery (:func:`pool_at_input`; blocks without an expansion keep their pool in place, as ``maxpool`` does) and
times it side by side with the original, ``maxpool`` and the ``identity`` ceiling on each backend
(:func:`pfconvert.report.latency.measure`, interleaved rounds), random weights: only the speed is measured here. Its
accuracy after a fine-tune is not known yet.

    python benchmarks/pool_position.py                                   # mobilenetv2_100, efficientnet_lite0
    python benchmarks/pool_position.py --backends ov-int8,ort --threads 1 --write-docs
    python benchmarks/pool_position.py --quick                           # mobilenetv2_050 at 64 px (a smoke run)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

from torch import nn

from pfconvert.report.backends import list_backends
from pfconvert.report.latency import LatencyConfig
from pfconvert.report.machine import describe_machine, machine_info
from pfconvert.report.report import SLOWER

try:
    from ._results import add_docs_flag, int_list, ov_int8_precision, write_page  # as benchmarks.NAME (tests)
    from .deploy_cpu import run as deploy_run  # build, time side by side, compare: one row per variant
    from .speed import _build  # the original, its conversions, and the identity ceiling (layout-friendly)
except ImportError:
    from _results import add_docs_flag, int_list, ov_int8_precision, write_page  # run as a script
    from deploy_cpu import run as deploy_run
    from speed import _build

MODELS = ("mobilenetv2_100", "efficientnet_lite0")
RULES = ("maxpool", "identity")
VARIANT = "maxpool at block input"


class PooledConv2d(nn.Module):
    """``conv(pool(x))``: a block's expansion conv that reads a max-pooled input (the conv's parameters untouched)."""

    def __init__(self, pool: nn.MaxPool2d, conv: nn.Module) -> None:
        super().__init__()
        self.pool, self.conv = pool, conv

    def forward(self, x):  # noqa: ANN001, ANN201 - a tensor in, a tensor out
        return self.conv(self.pool(x))


def pool_at_input(model: nn.Module) -> tuple[nn.Module, int, int]:
    """A copy of ``model`` in which every timm inverted residual (``conv_pw`` -> ``bn1`` -> ``conv_dw`` -> ``bn2``
    -> ``conv_pwl``) max-pools its input before ``conv_pw`` with the depthwise conv's kernel, stride and padding, and
    its depthwise conv and ``bn2`` are removed; a block without an expansion (``conv_dw`` first) gets the pool in the
    depthwise conv's place. Returns the copy, the blocks moved and the blocks pooled in place."""
    out = copy.deepcopy(model)
    moved = in_place = 0
    for block in out.modules():
        dw = getattr(block, "conv_dw", None)
        if not isinstance(dw, nn.Conv2d) or dw.groups != dw.in_channels:
            continue
        k, s = dw.kernel_size[0], dw.stride[0]
        pool = nn.MaxPool2d(k, s, (k - 1) // 2 * dw.dilation[0], dilation=dw.dilation[0])
        if isinstance(getattr(block, "conv_pw", None), nn.Conv2d) and isinstance(getattr(block, "conv_pwl", None),
                                                                               nn.Conv2d):
            block.conv_pw = PooledConv2d(pool, block.conv_pw)
            block.conv_dw = nn.Identity()
            block.bn2 = nn.Identity()
            moved += 1
        else:
            block.conv_dw = pool
            if hasattr(block, "bn1"):
                block.bn1 = nn.Identity()  # its norm and activation go with the conv, as the maxpool rule absorbs them
            in_place += 1
    return out, moved, in_place


def run(models: list[str], backends: list[str], config: LatencyConfig) -> tuple[list[dict], dict[str, str]]:
    """Time each model's variants (benchmarks/deploy_cpu.py's loop); one dict per (model, variant as ``rule``,
    backend, batch size), and per model a line saying how many blocks the variant changed."""
    notes: dict[str, str] = {}

    def build(name: str, rules: list[str], size: tuple[int, int, int]) -> dict[str, nn.Module]:
        built = _build(name, [r for r in rules if r != VARIANT], size)
        built[VARIANT], moved, in_place = pool_at_input(built["original"])
        notes[name] = f"{name}: {moved} blocks pool their input, {in_place} pool in place (no expansion)"
        return built

    rows = deploy_run({name: [*RULES, VARIANT] for name in models}, backends, config, build)
    return rows, notes


def markdown(rows: list[dict], backends: list[str], size: int, notes: dict[str, str]) -> str:
    """One line per model, variant and batch size; a column per backend: speed-up (original ms -> variant ms)."""
    labels = {r["backend"]: r["backend_label"] for r in rows}
    out = [f"| model | variant | batch | {' | '.join(labels.get(b, b) for b in backends)} |",
           "|---|---|---:|" + "---:|" * len(backends)]
    for model, variant, bs in dict.fromkeys((r["model"], r["rule"], r["batch_size"]) for r in rows):
        mine = {r["backend"]: r for r in rows if (r["model"], r["rule"], r["batch_size"]) == (model, variant, bs)}
        cells = []
        for b in backends:
            r = mine.get(b)
            cells.append("" if r is None else f"{r['speedup']:.2f}x{' (slower)' if r['verdict'] == SLOWER else ''} "
                                              f"({r['original_ms']:.1f} -> {r['converted_ms']:.1f} ms)")
        out.append(f"| {model} | {variant} | {bs} | {' | '.join(cells)} |")
    out += ["", f"Input {size}x{size} px, random weights (speed only; int8 calibrated on random inputs). Each cell: "
            "speed-up = original / variant latency on that backend (median of interleaved rounds, the original and "
            "every variant in the same rounds), then both medians; '(slower)': beyond the noise margin. `maxpool`, "
            "`identity`: the rules (identity: the ceiling of replacing depthwise convs in place); "
            f"'{VARIANT}': each inverted residual max-pools its input before the 1x1 expansion (the depthwise conv's "
            "kernel, stride and padding) and drops the depthwise conv with its norm and activation; a block with no "
            "expansion pools in place.", "",
            *(f"- {line}" for line in notes.values())]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: [m for m in t.split(",") if m], default=None,
                        help=f"comma-separated (default: {','.join(MODELS)})")
    parser.add_argument("--backends", type=lambda t: t.split(","), default=None,
                        help="comma-separated (default: ov-int8 and ort where installed)")
    parser.add_argument("--batch-sizes", type=int_list, default=None, help="default: 1,32")
    parser.add_argument("--img-size", type=int, default=None, help="default: 224")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--runs", type=int, default=None, help="default: 15")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget per cell (>= 5 rounds)")
    parser.add_argument("--quick", action="store_true", help="mobilenetv2_050 at 64 px, batch 1, 3 rounds")
    add_docs_flag(parser, page="pool-position")
    args = parser.parse_args(argv)
    if args.write_docs and args.quick:
        parser.error("--quick is a smoke run; --write-docs writes the full table only")
    available = list_backends()
    backends = args.backends or [b for b in ("ov-int8", "ort") if b in available]
    missing = [b for b in backends if b not in available]
    if missing or not backends:
        parser.error(f"backend(s) {missing or backends} not available here (OpenVINO: pip install "
                     "'pfconvert[openvino]')")
    size = args.img_size or (64 if args.quick else 224)
    config = LatencyConfig(batch_sizes=tuple(args.batch_sizes or ([1] if args.quick else [1, 32])),
                           input_size=(3, size, size), runs=args.runs or (3 if args.quick else 15),
                           warmup=1 if args.quick else 3, threads=args.threads,
                           max_seconds=args.max_seconds or (2.0 if args.quick else 30.0), deploy_method="llga",
                           min_runs=3 if args.quick else 5)
    models = args.models or (["mobilenetv2_050"] if args.quick else list(MODELS))
    machine = describe_machine(machine_info(args.threads)) + ov_int8_precision(backends)
    start = time.perf_counter()
    rows, notes = run(models, backends, config)
    machine += f", {time.perf_counter() - start:.0f} s total"
    table = markdown(rows, backends, size, notes)
    sys.stdout.write(f"Machine: {machine}\n\n{table}")
    if args.write_docs:
        write_page(args.docs_page, f"Where the pool goes: at the depthwise conv or at the block's input ({size} px)",
                   table, machine)
    return table


if __name__ == "__main__":
    main()
