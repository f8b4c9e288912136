"""Peak memory of one inference forward.

What is measured (also in :data:`MEMORY_NOTE`, which the report prints):

- **CPU**: the peak of tensor memory allocated during one eager forward under ``torch.inference_mode`` (activations
  and temporaries; the weights and the input existed before and are not counted). PyTorch keeps no allocator
  statistics on CPU, so the peak is rebuilt from ``torch.profiler`` memory events: every allocation is attributed to
  the operator that made it, every free is timestamped, and the running sum's maximum is the peak. Memory that an
  operator allocates and frees inside itself (e.g. a convolution's workspace) is not seen.
- **CUDA**: ``torch.cuda.max_memory_allocated`` during the forward minus the memory allocated before it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .._files import quiet_fd
from ..graph.dataflow import probe_input

__all__ = ["MEMORY_NOTE", "peak_memory", "peak_memory_cpu", "peak_memory_cuda"]

MEMORY_NOTE = ("Peak memory: tensor memory allocated during one eager forward (activations and temporaries; weights "
               "and input excluded), from torch.profiler memory events on CPU, torch.cuda.max_memory_allocated on "
               "CUDA")


def peak_memory_cpu(model: nn.Module, batch_size: int = 1, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Peak bytes of tensors allocated during one CPU forward (see the module docstring).

    Args:
        model: A model on the CPU; it is put in eval mode for the measurement and its mode is restored.
        batch_size: Batch of the random input.
        input_size: (C, H, W) of the input.
    """
    from torch.profiler import ProfilerActivity, profile

    x = probe_input(model, (batch_size, *input_size))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(x)  # first call: lazy initialisation and caches stay out of the measurement
            with quiet_fd(2), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                model(x)
    finally:
        model.train(was_training)
    deltas = []
    for event in prof.events():
        if event.name == "[memory]":  # frees (and allocations) outside any operator
            deltas.append((event.time_range.start, event.cpu_memory_usage))
        elif event.self_cpu_memory_usage:  # net allocation of the operator itself, children excluded
            deltas.append((event.time_range.start, event.self_cpu_memory_usage))
    current = peak = 0
    for _, delta in sorted(deltas, key=lambda d: d[0]):
        current += delta
        peak = max(peak, current)
    return int(peak)


def peak_memory_cuda(model: nn.Module, batch_size: int = 1, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Peak bytes allocated by one CUDA forward above what was allocated before it (model already on the GPU)."""
    device = next(iter(model.parameters())).device
    x = probe_input(model, (batch_size, *input_size))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(x)
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            model(x)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
    finally:
        model.train(was_training)
    return int(peak - before)


def peak_memory(model: nn.Module, batch_size: int = 1, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Peak forward memory on the device the model is on (CPU or CUDA); see :data:`MEMORY_NOTE`."""
    param = next(iter(model.parameters()), None)
    if param is not None and param.device.type == "cuda":
        return peak_memory_cuda(model, batch_size, input_size)
    return peak_memory_cpu(model, batch_size, input_size)
