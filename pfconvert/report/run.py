"""Build a :class:`~pfconvert.report.report.Report`: count, measure memory and latency of two models in one run."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import nn

from .backends import backend_label, default_backends, get_backend, is_int8
from .counting import CONVENTION, count_macs, count_params
from .latency import LatencyConfig, measure
from .machine import machine_info
from .memory import MEMORY_NOTE, peak_memory
from .report import ModelStats, Report, compare_timings

__all__ = ["run_report"]


def _stats(model: nn.Module, name: str, input_size: tuple[int, int, int], memory_batches: Sequence[int],
           accuracy: float | None) -> ModelStats:
    macs = count_macs(model, input_size)
    memory = {bs: peak_memory(model, bs, input_size) for bs in memory_batches}
    return ModelStats(name, count_params(model), macs.macs, macs.pool_ops, memory, accuracy)


def run_report(
    original: nn.Module,
    converted: nn.Module,
    *,
    names: tuple[str, str] = ("original", "converted"),
    input_size: tuple[int, int, int] = (3, 224, 224),
    batch_sizes: Sequence[int] = (1, 32),
    backends: Sequence[str] | None = None,
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    max_seconds: float = 30.0,
    deploy_method: str = "auto",
    accuracies: tuple[float | None, float | None] = (None, None),
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
    int8: bool = False,
    calibration: Any = None,
    accuracy: dict[str, dict[str, float]] | None = None,
    prepared: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Compare an original and a converted model: params, MACs, pool ops, peak memory, latency per backend.

    Both models are measured in the same run; their timings are interleaved round by round. The models are not
    modified (backends work on copies where they need to transform them).

    Args:
        original: The unconverted model (CPU).
        converted: The converted model (CPU).
        names: Display names of the two models.
        input_size: (C, H, W) of the input.
        batch_sizes: Batch sizes timed on every backend (and whose peak memory is measured).
        backends: Backend names (``pfconvert.report.backends.list_backends()``); None = every available one.
        runs: Timed rounds per backend and batch size.
        warmup: Untimed forwards per model first.
        threads: CPU threads (torch and ONNX Runtime); None keeps torch's current setting.
        max_seconds: Time budget of one backend and batch size (at least 5 rounds are run).
        deploy_method: How the ``cpu`` backend deploys both models (see :func:`pfconvert.deploy.optimize_for_cpu`).
        accuracies: Top-1 of (original, converted) when known (shown and plotted).
        memory: Measure peak memory.
        progress: Called with short status texts.
        int8: With ``backends`` None, also time the int8 backends (``ort-int8``, ``ov-int8``).
        calibration: Calibration inputs of the int8 backends (:class:`pfconvert.deploy.quantize.Calibration`); None:
            random inputs (the report says so: the int8 accuracy is then unknown).
        accuracy: Top-1 per way of running the models, measured by the caller (shown side by side).
        prepared: The runtime models the caller measured ``accuracy`` on, by model name (``original`` /
            ``converted``) then runtime (:func:`pfconvert.study.deployed.prepare_runtimes`): timed as they are.

    Returns:
        The :class:`Report`.
    """
    names_backends = list(backends) if backends is not None else default_backends(int8=int8)
    for name in names_backends:
        get_backend(name)  # fail on an unknown or unavailable backend before the long part
    say = progress or (lambda _: None)
    say("counting parameters and MACs")
    mem_batches = list(batch_sizes) if memory else []
    stats = [_stats(m, n, input_size, mem_batches, a) for m, n, a in zip((original, converted), names, accuracies)]
    config = LatencyConfig(batch_sizes=tuple(batch_sizes), input_size=input_size, runs=runs, warmup=warmup,
                           threads=threads, max_seconds=max_seconds, deploy_method=deploy_method,
                           calibration=calibration, prepared=dict(prepared or {}))
    timings = measure({"original": original, "converted": converted}, names_backends, config, progress=say)
    rows = []
    for (backend_name, bs), times in timings.items():
        label = backend_label(backend_name, timings.methods.get((backend_name, bs), config.deploy_method))
        rows.append(compare_timings(backend_name, label, bs, times["original"], times["converted"]))
    notes = [f"Backends: {'; '.join(f'{get_backend(b).label} = {get_backend(b).description}' for b in names_backends)}"]
    if any(is_int8(b) for b in names_backends):
        notes.append(calibration.describe() if calibration is not None else
                     "int8 calibrated on random inputs (no --data given): the int8 accuracy is unknown; pass --data "
                     "to calibrate on your images and measure it")
    controlled = sorted({m.label for runtimes in (prepared or {}).values() for m in runtimes.values()
                         if getattr(m, "max_drop", None) is not None})
    notes += [f"{label}: the model timed is the one whose top-1 is shown" for label in controlled]
    return Report(stats[0], stats[1], tuple(input_size), config.resolved_threads(), rows,
                  convention=CONVENTION, memory_note=MEMORY_NOTE,
                  machine=machine_info(config.resolved_threads()), notes=notes, accuracy=dict(accuracy or {}))

