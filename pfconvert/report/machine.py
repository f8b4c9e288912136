"""A one-line description of the machine a measurement ran on (CPU model, threads, library versions, GPU)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["machine_info", "describe_machine"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "neon", "asimd")
"""The instruction-set extensions that decide which int8 / fp32 kernels a runtime picks (VNNI and AMX for int8)."""


def _isa() -> str:
    """The :data:`ISA_FLAGS` this CPU has, from /proc/cpuinfo ("" when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in ISA_FLAGS if f in flags)
    except OSError:
        pass
    return ""


def machine_info(threads: int | None = None) -> dict[str, str]:
    """CPU model and core count, threads used, OS, Python/torch/onnxruntime/timm versions, GPU if any."""
    info = {
        "cpu": _cpu_model(),
        "cpu_cores": str(os.cpu_count()),
        "threads": str(threads if threads is not None else torch.get_num_threads()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    isa = _isa()
    if isa:
        info["isa"] = isa
    for module in ("onnxruntime", "timm", "openvino", "nncf"):
        if module in ("openvino", "nncf"):
            from importlib.metadata import PackageNotFoundError, version

            try:  # the installed version, without importing the package
                info[module] = version(module)
            except PackageNotFoundError:
                pass
            continue
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_avg_1min"] = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    return info


def describe_machine(info: dict[str, str] | None = None) -> str:
    """``AMD EPYC, 2 cores (2 threads used), torch 2.14.1, onnxruntime 1.23.2, ...`` in one line."""
    info = info or machine_info()
    parts = [f"{info['cpu']}, {info['cpu_cores']} cores ({info['threads']} threads used)"]
    if info.get("isa"):
        parts.append(f"ISA {info['isa']}")
    if "gpu" in info:
        parts.append(f"GPU {info['gpu']}")
    parts += [f"{k} {info[k]}" for k in ("torch", "onnxruntime", "openvino", "nncf", "timm", "python", "os")
              if k in info]
    if "load_avg_1min" in info:
        parts.append(f"load average {info['load_avg_1min']} at start")
    return ", ".join(parts)
