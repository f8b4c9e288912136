"""Max-pool kernels against the depthwise conv they replace, on the real layer shapes of converted models.

For every depthwise conv of each model (its input shape, kernel, stride and padding, read by a forward hook), one
interleaved timing of: the depthwise conv itself (what the original model runs), aten's ``max_pool2d`` (argmax
indices included), oneDNN's pooling reached from a plain tensor (two layout copies), and the native kernel
(:mod:`pfconvert.native`), in NCHW and in channels_last. The table sums each op over the model's layers: the time a
model spends in its spatial layers, per kernel. Progress goes to stderr, the table to stdout.

Usage::

    python benchmarks/pool_kernels.py                          # mobilenetv2_100 and efficientnet_lite0, batch 1 and 32
    python benchmarks/pool_kernels.py --models mobilenetv2_100 --batch-sizes 1 --per-layer
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pfconvert.conversion.models import create_model
from pfconvert.ops.kernels import native
from pfconvert.report.latency import LatencyConfig, median_ms, time_rounds, torch_threads
from pfconvert.report.machine import describe_machine, machine_info

try:
    from ._results import add_docs_flag, int_list, write_page  # imported as benchmarks.pool_kernels (tests, python -m)
except ImportError:
    from _results import add_docs_flag, int_list, write_page  # run as a script: its directory is sys.path[0]

Layer = tuple[int, int, int, int, int, int]  # channels, height, width, kernel, stride, padding


def depthwise_layers(name: str, size: int = 224) -> Counter[Layer]:
    """The model's depthwise convs as (C, H, W, k, s, p) -> how many layers have that shape."""
    model = create_model(name).eval()
    found: Counter[Layer] = Counter()

    def hook(module: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> None:
        _, c, h, w = args[0].shape
        found[(c, h, w, module.kernel_size[0], module.stride[0], module.padding[0])] += 1

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 and m.kernel_size[0] == m.kernel_size[1]]
    with torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return found


def _kernels(x: torch.Tensor, layer: Layer) -> dict[str, Callable[[], torch.Tensor]]:
    c, _, _, k, s, p = layer
    weight = torch.randn(c, 1, k, k)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ops = {
        "dw conv NCHW": lambda: F.conv2d(x, weight, None, s, p, 1, c),
        "dw conv NHWC": lambda: F.conv2d(x_cl, weight, None, s, p, 1, c),
        "aten pool NCHW": lambda: F.max_pool2d(x, k, s, p),
        "oneDNN pool NCHW": lambda: F.max_pool2d(x.to_mkldnn(), k, s, p).to_dense(),
    }
    if native.library() is not None:
        ops["native pool NCHW"] = lambda: native.max_pool2d(x, k, s, p)
        ops["native pool NHWC"] = lambda: native.max_pool2d(x_cl, k, s, p)
    return ops


def measure_layer(layer: Layer, batch_size: int, config: LatencyConfig) -> dict[str, float]:
    """Median ms of every kernel on one layer shape (checked equal to aten's pool first)."""
    c, h, w = layer[:3]
    x = torch.randn(batch_size, c, h, w)
    ops = _kernels(x, layer)
    with torch.inference_mode():
        ref = ops["aten pool NCHW"]()
        for key in [key for key in ops if "pool" in key]:
            if not torch.equal(ops[key](), ref):
                raise SystemExit(f"{key} differs from aten's max_pool2d on {layer}")
        times = time_rounds(ops, config)
    return {key: median_ms(v) for key, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=["mobilenetv2_100", "efficientnet_lite0"])
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 32])
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--per-layer", action="store_true", help="also print one row per layer shape")
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    if native.library() is None:
        print(f"native kernel unavailable: {native.unavailable_reason()}", file=sys.stderr)
    start = time.perf_counter()
    lines: list[str] = []
    with torch_threads(args.threads):
        machine = describe_machine(machine_info(args.threads))
        for name in args.models:
            layers = depthwise_layers(name)
            for bs in args.batch_sizes:
                config = LatencyConfig(runs=args.runs if bs == 1 else max(5, args.runs // 4), warmup=2,
                                       max_seconds=10.0)
                totals: Counter[str] = Counter()
                for layer, count in layers.items():
                    print(f"[{time.strftime('%H:%M:%S')}] {name} batch {bs}: {layer}", file=sys.stderr)
                    ms = measure_layer(layer, bs, config)
                    for key, value in ms.items():
                        totals[key] += value * count
                    if args.per_layer:
                        c, h, w, k, s, _ = layer
                        lines.append(f"| {name} | {bs} | {c}x{h}x{w} k{k} s{s} (x{count}) | "
                                     + " | ".join(f"{ms.get(key, float('nan')):.3f}" for key in _header()) + " |")
                lines.append(f"| **{name}** | {bs} | all {sum(layers.values())} depthwise layers | "
                             + " | ".join(f"**{totals[key]:.2f}**" if key in totals else "-" for key in _header())
                             + " |")
    machine += f", {time.perf_counter() - start:.0f} s total"
    table = "\n".join([
        "| model | batch | layers | " + " | ".join(f"{key} ms" for key in _header()) + " |",
        "|---|---:|---|" + "---:|" * len(_header()), *lines, "",
        "Median of interleaved rounds, the models' depthwise layer shapes at 224 px; a model's row is the sum over its "
        "depthwise layers (each shape timed once, times its count). Every pool kernel is checked equal to aten's "
        "max_pool2d before timing."])
    print(f"Machine: {machine}, {time.strftime('%Y-%m-%d')}\n\n{table}")
    if args.write_docs:
        write_page("pool-kernels", "Max-pool kernels against the depthwise convs they replace (224 px)", table,
                   machine)


def _header() -> list[str]:
    return ["dw conv NCHW", "dw conv NHWC", "aten pool NCHW", "oneDNN pool NCHW", "native pool NCHW",
            "native pool NHWC"]


if __name__ == "__main__":
    main()
