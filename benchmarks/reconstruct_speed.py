"""Least-squares reconstruction: cached activations against one partial forward of both models per refit layer.

For each model and rule: convert (random weights; the timing does not depend on them), then time
:func:`pfconvert.recover.reconstruct` on the same random images twice, in alternating rounds: once as it runs (blocks
that chain are refit from both models' activations cached per block) and once with the cache disabled (every layer
from partial forwards of both models, what it did before). It also reports the largest difference between the two
paths' refit weights and the time of block-wise distillation on top (``--block-steps``). The table goes to stdout,
progress to stderr; the machine is stamped on the table.

Usage::

    python benchmarks/reconstruct_speed.py       # lite1 maxpool, mobilenetv2_100 maxpool, resnet50 r50-max
    python benchmarks/reconstruct_speed.py --models efficientnet_lite1:maxpool --size 64 --images 512 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from statistics import median

import torch

import pfconvert
from pfconvert.conversion.models import create_model
from pfconvert.recover import refit
from pfconvert.report.latency import torch_threads
from pfconvert.report.machine import describe_machine, machine_info

DEFAULT_CASES = ("efficientnet_lite1:maxpool", "mobilenetv2_100:maxpool", "resnet50:r50-max")


def _time(converted: torch.nn.Module, original: torch.nn.Module, batches: list[torch.Tensor], size: int,
          cached: bool, **kwargs: object) -> tuple[float, torch.nn.Module]:
    """Seconds of one reconstruction of a fresh copy of ``converted``, and that copy."""
    model = copy.deepcopy(converted)
    saved = refit._cache_budget
    if not cached:
        refit._cache_budget = lambda _device: 0  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        refit.reconstruct(model, original, batches, input_size=(3, size, size), **kwargs)  # type: ignore[arg-type]
        return time.perf_counter() - started, model
    finally:
        refit._cache_budget = saved  # type: ignore[assignment]


def run_case(case: str, args: argparse.Namespace) -> dict[str, object]:
    name, _, rule = case.partition(":")
    torch.manual_seed(0)
    kwargs = {"zero_init_last": False} if name.startswith("resnet") else {}
    original = create_model(name, num_classes=10, **kwargs).eval()
    converted, _ = pfconvert.convert(original, rule, input_size=(3, args.size, args.size))
    batches = list(torch.randn(args.images, 3, args.size, args.size,
                               generator=torch.Generator().manual_seed(1)).split(args.batch_size))
    layers = len(refit.find_consumers(converted, original, (3, args.size, args.size)))
    cached, partial = [], []
    for index in range(args.rounds):
        print(f"{case}: round {index + 1}/{args.rounds}", file=sys.stderr, flush=True)
        seconds, fast = _time(converted, original, batches, args.size, True)
        cached.append(seconds)
        seconds, slow = _time(converted, original, batches, args.size, False)
        partial.append(seconds)
    gap = max(float((a - b).abs().max()) for a, b in zip(fast.state_dict().values(), slow.state_dict().values())
              if a.is_floating_point())
    block = _time(converted, original, batches, args.size, True, block_steps=args.block_steps)[0] \
        if args.block_steps else None
    return {"case": case, "layers": layers, "cached": median(cached), "partial": median(partial), "gap": gap,
            "block": block}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_CASES), help="MODEL:RULE cases")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path (the median is shown)")
    parser.add_argument("--block-steps", type=int, default=100, help="also time block-wise distillation (0: no)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    with torch_threads(args.threads):
        rows = [run_case(case, args) for case in args.models]
        machine = describe_machine(machine_info())
    print(f"Machine: {machine}\n")
    print(f"Random weights and images, {args.size} px, {args.images} images in batches of {args.batch_size}, median of "
          f"{args.rounds} alternating rounds.\n")
    steps = f"+ {args.block_steps} block steps (s)" if args.block_steps else "block steps"
    print(f"| model: rule | refit layers | partial forwards (s) | cached activations (s) | speed-up | largest weight "
          f"difference | {steps} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        block = "-" if r["block"] is None else f"{r['block']:.1f}"
        print(f"| {r['case']} | {r['layers']} | {r['partial']:.1f} | {r['cached']:.1f} | "
              f"{r['partial'] / r['cached']:.1f}x | {r['gap']:.1e} | {block} |")  # type: ignore[operator]


if __name__ == "__main__":
    main()
