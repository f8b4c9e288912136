"""A native max-pool kernel for CPU inference, compiled on first use with the machine's C compiler.

Why: aten's CPU ``max_pool2d`` always computes argmax indices (3-20x slower, per layer, than the NCHW depthwise conv
it replaces), and oneDNN's pooling, reached from a plain tensor, costs two layout copies. ``csrc/maxpool.c`` (next to
this module) computes only the max, in the tensor's own layout (NCHW or channels_last), with -inf padding and NaN
propagation as torch's kernel has. Measured on this project's 2-core Xeon over MobileNetV2's and EfficientNet-Lite0's depthwise
layer shapes (``benchmarks/pool_kernels.py``): summed over each model, faster than oneDNN's path and than the NCHW
depthwise conv that the pool replaces (a few 7x7 maps at batch 32 are the exception).

Build: ``cc -O3 -march=native -fopenmp -shared -fPIC`` (``$CC`` if set), once per machine, cached under
``$PFCONVERT_CACHE_DIR`` (default ``~/.cache/pfconvert``) by a hash of the source, compiler, flags and CPU. OpenMP
binds to the runtime torch has loaded, so ``torch.set_num_threads`` applies. With no compiler, a failed build, a
non-writable cache or ``PFCONVERT_NATIVE=0``, :func:`library` returns None and callers fall back (see
:class:`pfconvert.ops.kernels.FastMaxPool2d`); the reason is in :func:`unavailable_reason`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import torch

__all__ = ["library", "unavailable_reason", "max_pool2d", "supports", "cache_dir"]

_FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"])
_INT = ctypes.c_int64
_reason: str | None = None


def cache_dir() -> Path:
    """Where built kernels are kept: ``$PFCONVERT_CACHE_DIR``, else ``$XDG_CACHE_HOME/pfconvert`` or ``~/.cache``."""
    explicit = os.environ.get("PFCONVERT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pfconvert"


def _cpu_signature() -> str:
    """Text that changes with the CPU's instruction set (``-march=native`` code must not move to another CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _compile(compiler: list[str], source: Path, out: Path) -> list[str]:
    """Compile ``source`` into the shared library ``out`` with the first flag set that works; returns the flags."""
    errors = []
    for flags in _FLAG_SETS:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        cmd = [*compiler, *flags, "-shared", "-fPIC", "-o", str(tmp), str(source), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{' '.join(flags)}: {exc}")
            continue
        if done.returncode == 0:
            os.replace(tmp, out)  # atomic: a concurrent build sees the old file or the whole new one
            return flags
        tmp.unlink(missing_ok=True)
        errors.append(f"{' '.join(flags)}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
    raise OSError("; ".join(errors))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.pf_maxpool_nchw.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [_INT] * 12
    lib.pf_maxpool_nhwc.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [_INT] * 13
    lib.pf_maxpool_nchw.restype = lib.pf_maxpool_nhwc.restype = ctypes.c_int
    return lib


def _build() -> ctypes.CDLL:
    if os.environ.get("PFCONVERT_NATIVE", "1") == "0":
        raise OSError("disabled by PFCONVERT_NATIVE=0")
    if os.name == "nt":
        raise OSError("not built on Windows")
    found = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    compiler = shlex.split(found) if found else []
    if not compiler or shutil.which(compiler[0]) is None:
        raise OSError("no C compiler found (install gcc or set CC)")
    source_ref = resources.files("pfconvert.ops.kernels") / "csrc" / "maxpool.c"
    with resources.as_file(source_ref) as source:
        text = Path(source).read_bytes()
        key = hashlib.sha256(b"\0".join([text, " ".join(compiler).encode(), repr(_FLAG_SETS).encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        folder = _writable_folder()
        path = folder / f"maxpool-{key}.so"
        if path.exists():
            try:
                return _bind(ctypes.CDLL(str(path)))
            except OSError:
                path.unlink(missing_ok=True)  # a damaged cache entry: build it again
        _compile(compiler, Path(source), path)
        return _bind(ctypes.CDLL(str(path)))


def _writable_folder() -> Path:
    """The cache folder, or a per-user temp folder where the cache cannot be written.

    A folder is used only if this user owns it and no one else can write to it: a library loaded from a folder that
    others can write to would run their code.
    """
    uid = os.getuid() if hasattr(os, "getuid") else None
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / f"pfconvert-{uid if uid is not None else 'user'}"):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = folder.stat()
            if uid is not None and (info.st_uid != uid or info.st_mode & 0o022):
                continue
            with tempfile.NamedTemporaryFile(dir=folder):
                return folder
        except OSError:
            continue
    raise OSError(f"no private writable folder for the built kernel (tried {cache_dir()} and the temp folder)")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel library, building it on first call; None where it cannot be had (see the module doc)."""
    global _reason
    try:
        return _build()
    except OSError as exc:
        _reason = str(exc)
        return None


def unavailable_reason() -> str | None:
    """Why :func:`library` returned None (None if it has not, or was not asked yet)."""
    return _reason


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _geometry(kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] | None,
              padding: int | tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding) per axis; no stride means the kernel's, as in ``nn.MaxPool2d``."""
    kernel = _pair(kernel_size)
    return kernel, _pair(stride) if stride not in (None, (), []) else kernel, _pair(padding)


def supports(x: torch.Tensor, kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] | None,
             padding: int | tuple[int, ...], dilation: int | tuple[int, ...], ceil_mode: bool) -> bool:
    """Whether :func:`max_pool2d` computes this pool: CPU float32 NCHW input, no dilation, floor mode, and a
    non-empty output."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or ceil_mode:
        return False
    if _pair(dilation) != (1, 1):
        return False
    (kh, kw), (sh, sw), (ph, pw) = _geometry(kernel_size, stride, padding)
    h, w = x.shape[-2:]
    return min(kh, kw, sh, sw) >= 1 and 2 * ph <= kh and 2 * pw <= kw and h + 2 * ph >= kh and w + 2 * pw >= kw


def max_pool2d(x: torch.Tensor, kernel_size: int | tuple[int, ...], stride: int | tuple[int, ...] | None,
               padding: int | tuple[int, ...] = 0) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size, stride, padding)`` computed by the native kernel, output in ``x``'s layout
    (channels_last stays channels_last). Call only where :func:`supports` holds and :func:`library` is not None."""
    lib = library()
    assert lib is not None, "native kernel unavailable"
    (kh, kw), (sh, sw), (ph, pw) = _geometry(kernel_size, stride, padding)
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    threads = torch.get_num_threads()
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = torch.empty((n, c, ho, wo), dtype=torch.float32, memory_format=torch.channels_last)
        if lib.pf_maxpool_nhwc(x.data_ptr(), out.data_ptr(), n, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, threads):
            raise MemoryError("native max-pool: no memory for a row buffer")
        return out
    x = x.contiguous()
    out = torch.empty((n, c, ho, wo), dtype=torch.float32)
    if lib.pf_maxpool_nchw(x.data_ptr(), out.data_ptr(), n * c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, threads):
        raise MemoryError("native max-pool: no memory for a row buffer")
    return out
