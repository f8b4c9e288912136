"""Where the time goes on OpenVINO: each original and its conversion, profiled per layer kind, and the ratio a
conversion could reach at most (its new layers free).

For each ``MODEL:RULE`` case and batch size, the original and the converted model are compiled the way pfconvert
deploys them (:func:`pfconvert.deploy.openvino.compile_openvino`, with OpenVINO's per-layer counters on) and run in
interleaved rounds. The table sums the counters by layer kind and the precision OpenVINO chose for it (``Convolution
1x1 I8``, ``MaxPool I8``...), so a user sees which layers the conversion removed, which it added, and what stays.

The ceiling: the original's latency over the converted model's with the pooling layers the conversion added counted
as free (the converted model's MaxPool / AvgPool time minus the original's). No parameter-free replacement can do
better than that on this runtime, so a target above it cannot be met by a better pool kernel; only by changing what
else runs (the layers both models share).

int8 (``--backend ov-int8``) is NNCF's quantization as ``pfconvert`` runs it, calibrated on seeded random inputs
(weights are random: only speed is measured), with the first and last weighted layers in fp32 (pfconvert's default),
and with ``--all-int8`` also with every layer in int8 (what keeping the stem in fp32 costs). Timed with the counters
on: the totals are a little above an unprofiled run's, the same for both models.

Usage::

    python benchmarks/ov_profile.py                                   # resnet50:r50-max, ov-int8, batch 1 and 32
    python benchmarks/ov_profile.py --cases resnet50:r50-max mobilenetv2_100:maxpool --all-int8 --write-docs
    python benchmarks/ov_profile.py --quick                           # mobilenetv2_050:maxpool at 64 px (smoke run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

try:
    from ._results import add_docs_flag, int_list, ov_int8_precision, write_page  # as benchmarks.NAME (tests)
    from .speed import _build
except ImportError:
    from _results import add_docs_flag, int_list, ov_int8_precision, write_page  # run as a script
    from speed import _build

POOLS = ("MaxPool", "AvgPool")
"""OpenVINO layer types the parameter-free replacements become (their time is what the ceiling removes)."""


@dataclass
class Profile:
    """One model on one batch size: median latency over rounds (ms) and mean ms per layer kind per inference."""

    ms: float
    kinds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def pool_ms(self) -> float:
        return sum(v for k, v in self.kinds.items() if k.split(" ")[0] in POOLS)


def _kind(info: Any) -> str | None:
    """``Convolution 1x1 I8`` from a profiling entry (None for layers that were fused away or never ran; a layer
    that ran counts even when its counter reads 0 us, as small layers at 64 px sometimes do)."""
    if info.status.name != "EXECUTED":  # fused into another layer, or optimized out
        return None
    exec_type = info.exec_type
    precision = exec_type.rsplit("_", 1)[-1] if "_" in exec_type else exec_type
    shape = " 1x1" if "_1x1_" in exec_type else ""
    return f"{info.node_type}{shape} {precision}"


def deployed(models: dict[str, torch.nn.Module], backend: str, size: tuple[int, int, int],
             all_int8: bool) -> dict[str, Any]:
    """Each model as an ``openvino.Model`` for ``backend`` (``ov``, or ``ov-int8``: quantized as pfconvert does)."""
    from pfconvert.deploy.openvino import quantize_openvino, to_openvino
    from pfconvert.deploy.quantize import synthetic_calibration

    out = {}
    for name, model in models.items():
        out[name] = to_openvino(model, size)
        if backend == "ov-int8":
            out[name] = quantize_openvino(out[name], synthetic_calibration(size), size, keep_fp32=not all_int8)
    return out


def profile(ov_models: dict[str, Any], size: tuple[int, int, int], batch_size: int, threads: int, rounds: int,
            seconds: float, backend: str = "ov-int8") -> dict[str, Profile]:
    """Compile each model (:func:`deployed`) at ``batch_size`` and time them in ``rounds`` interleaved rounds of
    about ``seconds`` each per model (as many inferences as the slowest model's last warm-up inference fits), the
    per-layer counters on."""
    from pfconvert.deploy.openvino import compile_openvino, model_precision

    compiled = {name: compile_openvino(m, threads, batch_size, perf_count=True,
                                       precision=model_precision(backend == "ov-int8")).create_infer_request()
                for name, m in ov_models.items()}
    x = np.random.default_rng(0).random((batch_size, *size), dtype=np.float32)
    per_round: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, dict[str, float]] = {n: defaultdict(float) for n in compiled}
    counts: dict[str, dict[str, int]] = {}
    slowest = 0.0
    for name, request in compiled.items():
        seen: dict[str, set[str]] = defaultdict(set)
        for _ in range(3):  # the layers of each kind that ran in any warm-up inference (a counter may read NOT_RUN
            started = time.perf_counter()  # for a layer that ran in the inference before)
            request.infer({0: x})
            elapsed = time.perf_counter() - started
            for info in request.profiling_info:
                kind = _kind(info)
                if kind is not None:
                    seen[kind].add(info.node_name)
        slowest = max(slowest, elapsed)
        counts[name] = {kind: len(nodes) for kind, nodes in seen.items()}
    calls = max(1, int(seconds / max(slowest, 1e-9)))
    print(f"[{time.strftime('%H:%M:%S')}] batch {batch_size}: {rounds} rounds of {calls}", file=sys.stderr)
    for _ in range(rounds):
        for name, request in compiled.items():
            started = time.perf_counter()
            for _ in range(calls):
                request.infer({0: x})
                for info in request.profiling_info:
                    kind = _kind(info)
                    if kind is not None:
                        kinds[name][kind] += info.real_time.total_seconds() * 1e3 / (rounds * calls)
            per_round[name].append((time.perf_counter() - started) * 1e3 / calls)
    return {n: Profile(statistics.median(per_round[n]), dict(kinds[n]), dict(counts[n])) for n in compiled}


def markdown(case: str, backend: str, batch_size: int, rule: str, prof: dict[str, Profile], all_int8: bool) -> str:
    orig, conv = prof["original"], prof[rule]
    freed = max(0.0, conv.pool_ms() - orig.pool_ms())
    ceiling = orig.ms / max(conv.ms - freed, 1e-9)
    layers = "every layer int8" if all_int8 else "first and last weighted layers not quantized"
    if backend == "ov":
        layers = "fp32"
    out = [f"### {case}, {backend}, batch {batch_size} ({layers})", "",
           f"Latency: original {orig.ms:.2f} ms, {rule} {conv.ms:.2f} ms: **{orig.ms / conv.ms:.2f}x**; ceiling "
           f"(the {freed:.2f} ms of added pooling free) **{ceiling:.2f}x**.", "",
           f"| layer kind (OpenVINO type, precision) | original: layers | original: ms | {rule}: layers | "
           f"{rule}: ms |", "|---|---:|---:|---:|---:|"]
    keys = sorted(set(orig.kinds) | set(conv.kinds), key=lambda k: -max(orig.kinds.get(k, 0), conv.kinds.get(k, 0)))
    shown = [k for k in keys if max(orig.kinds.get(k, 0.0), conv.kinds.get(k, 0.0)) >= 0.005 * orig.ms]
    for k in shown:
        out.append(f"| {k} | {orig.counts.get(k, 0)} | {orig.kinds.get(k, 0.0):.3f} | {conv.counts.get(k, 0)} | "
                   f"{conv.kinds.get(k, 0.0):.3f} |")
    rest = [p.ms - sum(p.kinds.get(k, 0.0) for k in shown) for p in (orig, conv)]
    out.append(f"| the other layers, and time between layers | | {rest[0]:.3f} | | {rest[1]:.3f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=["resnet50:r50-max"], help="MODEL:RULE pairs")
    parser.add_argument("--backend", choices=("ov", "ov-int8"), default="ov-int8")
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 32], help="default: 1,32")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5, help="about this long per model per round")
    parser.add_argument("--all-int8", action="store_true",
                        help="int8: also profile each case with every layer in int8 (the stem and classifier too)")
    parser.add_argument("--quick", action="store_true", help="mobilenetv2_050:maxpool at 64 px, 2 rounds")
    add_docs_flag(parser, page="ov-profile")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.img_size, args.rounds, args.seconds, args.batch_sizes = (["mobilenetv2_050:maxpool"], 64, 2,
                                                                                   0.05, [1])
        if args.write_docs:
            parser.error("--quick is a smoke run; --write-docs writes the full table only")
    pairs = []
    for case in args.cases:
        model, sep, rule = case.partition(":")
        if not sep or not model or not rule:
            parser.error(f"--cases {case!r}: expected MODEL:RULE, e.g. resnet50:r50-max")
        pairs.append((model, rule))
    from pfconvert.deploy.openvino import nncf_available, openvino_available
    from pfconvert.report.machine import describe_machine, machine_info

    if not (nncf_available() if args.backend == "ov-int8" else openvino_available()):
        parser.error(f"--backend {args.backend} needs OpenVINO{' and NNCF' if args.backend == 'ov-int8' else ''}: "
                     "pip install 'pfconvert[openvino]'")
    threads = args.threads or torch.get_num_threads()
    machine = describe_machine(machine_info(threads)) + ov_int8_precision([args.backend])
    size = (3, args.img_size, args.img_size)
    sections = []
    variants = [False, True] if args.all_int8 and args.backend == "ov-int8" else [False]
    for model, rule in pairs:
        print(f"[{time.strftime('%H:%M:%S')}] building {model} + {rule}", file=sys.stderr)
        built = _build(model, [rule], size)
        for all_int8 in variants:
            ov_models = deployed(built, args.backend, size, all_int8)
            for bs in args.batch_sizes:
                prof = profile(ov_models, size, bs, threads, args.rounds, args.seconds, args.backend)
                sections.append(markdown(f"{model}: {rule}", args.backend, bs, rule, prof, all_int8))
    body = "\n".join(sections)
    sys.stdout.write(f"Machine: {machine}\n\nInput {args.img_size} px.\n\n{body}")
    if args.write_docs:
        write_page(args.docs_page, f"Where the time goes on OpenVINO ({args.backend}, {args.img_size} px)",
                   f"Input {args.img_size} px, random weights, median of {args.rounds} interleaved rounds, per-layer "
                   f"counters on.\n\n{body}", machine,
                   "\n\n".join(par.replace("\n", " ") for par in __doc__.split("\n\n")[1:4]))
    return body


if __name__ == "__main__":
    main()
