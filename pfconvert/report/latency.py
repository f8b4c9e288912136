"""Latency measurement: preparing a model for each backend, and an interleaved, warmed-up, synchronised timing loop.

Backends are registered in :mod:`pfconvert.report.backends`; this module prepares models for them.

Every timing is of one forward at a fixed batch size, after warm-up, with the device synchronised before the clock
is read. The models of a comparison are timed in interleaved rounds (A B, B A, A B...), so drift of a shared machine
hits both alike.
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .backends import Runner, get_backend
from .report import median_ms

__all__ = ["LatencyConfig", "torch_threads", "measure", "time_rounds", "median_ms", "prepare_eager", "prepare_deployed",
           "prepare_ort", "prepare_runtime", "runtime_available", "prepare_cuda", "prepare_cuda_amp", "ort_available",
           "cuda_available"]


@dataclass
class LatencyConfig:
    """How to measure.

    Attributes:
        batch_sizes: Batch sizes to time, each on every backend.
        input_size: (C, H, W) of the random input.
        runs: Timed rounds per backend and batch size (each round times every model once).
        warmup: Untimed forwards per model before timing.
        threads: CPU threads for PyTorch and ONNX Runtime; None keeps torch's current setting.
        max_seconds: Time budget of the timed rounds of one backend and batch size; fewer rounds are run when it
            would be exceeded, but never fewer than ``min_runs``.
        min_runs: See ``max_seconds``.
        deploy_method: How the ``cpu`` backend deploys (:func:`pfconvert.deploy.optimize_for_cpu`'s ``method``).
        calibration: Calibration inputs of the int8 backends (``ort-int8``, ``ov-int8``): a
            :class:`pfconvert.deploy.quantize.Calibration`; None calibrates on random inputs (timing does not depend
            on them; accuracy does, and is then unknown).
        prepared: Models already exported (and quantized) for a :mod:`pfconvert.deploy.runtime` backend, by model
            name, then runtime (:class:`pfconvert.deploy.runtime.RuntimeModel`): timed as they are, not built again,
            so the model timed is the model whose accuracy the caller measured.
    """

    batch_sizes: Sequence[int] = (1, 32)
    input_size: tuple[int, int, int] = (3, 224, 224)
    runs: int = 20
    warmup: int = 3
    threads: int | None = None
    max_seconds: float = 30.0
    min_runs: int = 5
    deploy_method: str = "auto"
    calibration: Any = None
    prepared: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def resolved_threads(self) -> int:
        """The thread count in effect."""
        return self.threads if self.threads is not None else torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block and restore it after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_input(batch_size: int, config: LatencyConfig) -> torch.Tensor:
    return torch.randn((batch_size, *config.input_size), generator=torch.Generator().manual_seed(0))


def prepare_eager(model: nn.Module, batch_size: int, config: LatencyConfig, cache: dict[str, Any]) -> Runner:
    x = _cpu_input(batch_size, config)
    model.eval()

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def prepare_deployed(model: nn.Module, batch_size: int, config: LatencyConfig, cache: dict[str, Any]) -> Runner:
    from ..deploy.cpu import optimize_for_cpu

    x = _cpu_input(batch_size, config)
    # one deployment per batch size: compile specialises and llga fuses for the example's shape
    cache.pop("deployed", None)  # the previous batch size's, freed before the next is built
    cache["deployed"] = deployed = optimize_for_cpu(model, x, method=config.deploy_method)
    cache["method"] = deployed.method  # after a fallback, not the method asked for
    with torch.inference_mode():
        deployed(x)

    def run() -> object:
        with torch.inference_mode():
            return deployed(x)

    return run


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx(model: nn.Module, config: LatencyConfig, cache: dict[str, Any]) -> bytes:
    """The model's ONNX export (dynamic batch), made once per model and shared by the backends that run it."""
    from ..deploy.onnx import export_onnx_bytes

    shared = cache.setdefault("shared", {})
    key = ("onnx", tuple(config.input_size))
    if key not in shared:
        shared[key] = export_onnx_bytes(model, config.input_size, dynamic_batch=True)
    return shared[key]


def prepare_ort(model: nn.Module, batch_size: int, config: LatencyConfig, cache: dict[str, Any]) -> Runner:
    from ..deploy.onnx import ort_session

    if "session" not in cache:
        data = _onnx(model, config, cache)
        cache["session"] = ort_session(data, threads=config.resolved_threads())
    session = cache["session"]
    name = session.get_inputs()[0].name
    feed = {name: _cpu_input(batch_size, config).numpy()}
    return lambda: session.run(None, feed)


def prepare_runtime(runtime: str) -> Callable[[nn.Module, int, LatencyConfig, dict[str, Any]], Runner]:
    """The ``prepare`` of a :mod:`pfconvert.deploy.runtime` backend (``ort-int8``, ``ov``, ``ov-int8``): the model is
    exported (and quantized) once per model, then compiled for each batch size (OpenVINO: a static shape)."""

    def prepare(model: nn.Module, batch_size: int, config: LatencyConfig, cache: dict[str, Any]) -> Runner:
        from ..deploy.runtime import build_runtime

        if "runtime" not in cache:
            cache["runtime"] = build_runtime(model, runtime, config.input_size, config.calibration,
                                             onnx_model=_onnx(model, config, cache))
        cache.pop("runner", None)  # the previous batch size's compiled model, freed first
        cache["runner"] = run = cache["runtime"].runner(config.resolved_threads(), batch_size)
        x = _cpu_input(batch_size, config).numpy()
        run(x)
        return lambda: run(x)

    return prepare


def runtime_available(runtime: str) -> Callable[[], bool]:
    """Whether the packages of a :mod:`pfconvert.deploy.runtime` backend are installed."""

    def available() -> bool:
        from ..deploy.runtime import runtime_available as installed

        return installed(runtime)

    return available


def _cuda(amp: bool) -> Callable[[nn.Module, int, LatencyConfig, dict[str, Any]], Runner]:
    def prepare(model: nn.Module, batch_size: int, config: LatencyConfig, cache: dict[str, Any]) -> Runner:
        if "model" not in cache:
            cache["model"] = copy.deepcopy(model).eval().cuda()
        gpu_model = cache["model"]
        x = torch.randn((batch_size, *config.input_size), device="cuda")

        def run() -> object:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                out = gpu_model(x)
            torch.cuda.synchronize()
            return out

        return run

    return prepare


prepare_cuda = _cuda(amp=False)
prepare_cuda_amp = _cuda(amp=True)


def cuda_available() -> bool:
    """Whether a CUDA GPU is there."""
    return torch.cuda.is_available()


def time_rounds(runners: Mapping[str, Runner], config: LatencyConfig) -> dict[str, list[float]]:
    """Warm up every runner, then time them in interleaved rounds, alternating the order each round."""
    names = list(runners)
    for name in names:
        for _ in range(config.warmup):
            runners[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for i in range(config.runs):
        for name in (names if i % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
        if i + 1 >= config.min_runs and time.perf_counter() - start > config.max_seconds:
            break
    return times


class Timings(dict):
    """``{(backend, batch_size): {model name: [seconds...]}}`` plus ``methods``: the deploy method(s) used per key."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: dict[tuple[str, int], str] = {}


def measure(models: Mapping[str, nn.Module], backends: Sequence[str], config: LatencyConfig,
            progress: Callable[[str], None] | None = None) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Time every model on every backend at every batch size, the models interleaved.

    Args:
        models: Name -> model (typically ``{"original": ..., "converted": ...}``); CPU models, timed in eval mode
            and left unchanged (their train/eval mode is restored).
        backends: Backend names (see :func:`pfconvert.report.backends.list_backends`).
        config: What to measure and how often.
        progress: Called with a short text before each backend and batch size (for a status line).

    Returns:
        ``{(backend, batch_size): {model name: [seconds per round, ...]}}``, with ``.methods``: the deploy method
        the ``cpu`` backend actually used, per key. When ``auto`` deploys some models with oneDNN Graph (llga) and
        falls back to ``jit`` for others, every model is deployed with ``jit`` at that batch size, so that the
        side-by-side ratios compare the same compiler.
    """
    resolved = [get_backend(name) for name in backends]
    results = Timings()
    modes = {name: model.training for name, model in models.items()}
    shared: dict[str, dict[str, Any]] = {name: {} for name in models}  # per model, across backends (an ONNX export)
    try:
        with torch_threads(config.threads):
            for backend in resolved:
                caches: dict[str, dict[str, Any]] = {name: {"shared": shared[name]} for name in models}
                for name in models:
                    if backend.name in config.prepared.get(name, {}):
                        caches[name]["runtime"] = config.prepared[name][backend.name]
                for batch_size in config.batch_sizes:
                    if progress is not None:
                        progress(f"{backend.label}, batch {batch_size}")
                    runners = {name: backend.prepare(model, batch_size, config, caches[name])
                               for name, model in models.items()}
                    used = list(dict.fromkeys(c["method"] for c in caches.values() if "method" in c))
                    if len(used) > 1:  # a model fell back to another method: deploy the others that way too, so
                        #                that they are compared on one path (side by side means the same compiler)
                        fallback = next(m for m in used if m != "llga") if "llga" in used else used[-1]
                        same = replace(config, deploy_method=fallback)
                        runners.update({name: backend.prepare(model, batch_size, same, caches[name])
                                        for name, model in models.items() if caches[name].get("method") != fallback})
                        used = [fallback]
                    results[(backend.name, batch_size)] = time_rounds(runners, config)
                    if used:
                        results.methods[(backend.name, batch_size)] = " / ".join(used)
                del caches
    finally:
        for name, model in models.items():
            model.train(modes[name])
    return results
