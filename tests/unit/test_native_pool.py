"""The native max-pool kernel (pfconvert/csrc/maxpool.c): built here, exact against torch, and the fallbacks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pfconvert.ops.kernels import FastMaxPool2d, native

GEOMETRIES = [  # (kernel, stride, padding), per axis where a pair
    (3, 1, 1), (3, 2, 1), (5, 1, 2), (5, 2, 2), (7, 1, 3), (2, 2, 0), (2, 1, 1), (3, 3, 0), (1, 2, 0), (3, 1, 0),
    ((1, 5), (1, 1), (0, 2)), ((5, 1), (2, 1), (2, 0)), ((3, 5), (2, 1), (1, 2)), (4, 2, 2),
]
SIZES = [(1, 1), (2, 3), (7, 7), (13, 17), (14, 14), (33, 40), (56, 56)]


@pytest.fixture(scope="module")
def lib() -> object:
    built = native.library()
    assert built is not None, f"the native kernel did not build: {native.unavailable_reason()}"
    return built


def _cases() -> list[tuple]:
    return [(g, s) for g, s in itertools.product(GEOMETRIES, SIZES)
            if native.supports(torch.empty(1, 1, *s), *g, dilation=1, ceil_mode=False)]


@pytest.mark.parametrize("geometry, size", _cases())
def test_native_matches_torch_in_both_layouts(lib: object, geometry: tuple, size: tuple[int, int]) -> None:
    k, s, p = geometry
    x = torch.randn(2, 19, *size, generator=torch.Generator().manual_seed(sum(size)))
    ref = F.max_pool2d(x, k, s, p)
    got = native.max_pool2d(x, k, s, p)
    assert torch.equal(got, ref) and got.is_contiguous()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got_cl = native.max_pool2d(x_cl, k, s, p)
    assert torch.equal(got_cl, ref)
    if not x_cl.is_contiguous():  # a 1x1 map is both layouts at once
        assert got_cl.is_contiguous(memory_format=torch.channels_last)


def test_native_propagates_nan_and_keeps_inf(lib: object) -> None:
    x = torch.randn(1, 40, 9, 9)
    x[0, 3, 4, 4] = float("nan")
    x[0, 5] = float("-inf")
    x[0, 6, 0, 0] = float("inf")
    for layout in (torch.contiguous_format, torch.channels_last):
        for k, s, p in [(3, 1, 1), (3, 2, 1), (5, 1, 2)]:
            ref = F.max_pool2d(x, k, s, p)
            got = native.max_pool2d(x.contiguous(memory_format=layout), k, s, p)
            assert torch.equal(got.isnan(), ref.isnan())
            assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(ref))


def test_native_same_result_on_one_and_two_threads(lib: object) -> None:
    x = torch.randn(4, 64, 28, 28)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.max_pool2d(x, 3, 1, 1)
        torch.set_num_threads(2)
        two = native.max_pool2d(x, 3, 1, 1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_native_takes_non_contiguous_input(lib: object) -> None:
    x = torch.randn(2, 8, 20, 30).transpose(2, 3)  # neither NCHW- nor channels_last-contiguous
    assert torch.equal(native.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))


def test_supports_refuses_what_the_kernel_does_not_compute() -> None:
    x = torch.randn(1, 2, 8, 8)
    assert native.supports(x, 3, 1, 1, 1, False)
    assert not native.supports(x, 3, 1, 1, 2, False)  # dilation
    assert not native.supports(x, 3, 1, 1, 1, True)  # ceil mode
    assert not native.supports(x.double(), 3, 1, 1, 1, False)
    assert not native.supports(torch.randn(1, 2, 2, 2), 5, 1, 0, 1, False)  # empty output


def test_fast_pool_uses_native_then_falls_back_to_onednn(lib: object, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 16, 15, 15)
    pool = FastMaxPool2d(3, 2, 1)
    calls = []
    real = native.max_pool2d
    monkeypatch.setattr(native, "max_pool2d", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode():
        assert torch.equal(pool(x), F.max_pool2d(x, 3, 2, 1))
    assert calls == [1]
    monkeypatch.setattr(native, "library", lambda: None)  # no compiler: oneDNN's pooling, same values
    with torch.inference_mode():
        assert torch.equal(pool(x), F.max_pool2d(x, 3, 2, 1))
    assert calls == [1]


@pytest.mark.slow
def test_build_is_cached_and_a_damaged_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("PFCONVERT_CACHE_DIR", str(first_dir))
    monkeypatch.setattr(native, "_compile", _counting(native._compile))
    first = native._build()
    built = list(first_dir.glob("maxpool-*.so"))
    assert len(built) == 1 and native._compile.calls == 1  # type: ignore[attr-defined]
    native._build()
    assert native._compile.calls == 1  # type: ignore[attr-defined]  # loaded from the cache
    second_dir.mkdir()
    (second_dir / built[0].name).write_bytes(b"not a shared library")  # e.g. a disk error
    monkeypatch.setenv("PFCONVERT_CACHE_DIR", str(second_dir))
    again = native._build()
    assert native._compile.calls == 2  # type: ignore[attr-defined]
    assert (second_dir / built[0].name).stat().st_size == built[0].stat().st_size
    x = torch.randn(1, 3, 9, 9)
    for lib in (first, again):
        out = torch.empty(1, 3, 9, 9)
        lib.pf_maxpool_nchw(x.data_ptr(), out.data_ptr(), 3, 9, 9, 9, 9, 3, 3, 1, 1, 1, 1, 1)
        assert torch.equal(out, F.max_pool2d(x, 3, 1, 1))


def test_disabled_or_no_compiler_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFCONVERT_NATIVE", "0")
    with pytest.raises(OSError, match="PFCONVERT_NATIVE=0"):
        native._build()
    monkeypatch.delenv("PFCONVERT_NATIVE")
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(OSError, match="no C compiler"):
        native._build()


def _counting(fn: Callable[..., object]) -> Callable[..., object]:
    """``fn`` that counts its calls in ``.calls`` (a test double)."""

    def wrapped(*args: object, **kwargs: object) -> object:
        wrapped.calls += 1
        return fn(*args, **kwargs)
    wrapped.calls = 0
    return wrapped


def test_a_folder_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant a library here
    monkeypatch.setenv("PFCONVERT_CACHE_DIR", str(shared))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    chosen = native._writable_folder()
    assert chosen != shared and chosen.parent == tmp_path / "tmp"
    assert chosen.stat().st_mode & 0o077 == 0  # created private


@pytest.mark.slow
def test_cc_may_carry_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = next(c for c in ("cc", "gcc", "clang") if native.shutil.which(c))
    monkeypatch.setenv("PFCONVERT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", f"{compiler} -Wall")
    lib = native._build()
    x = torch.randn(1, 2, 5, 5)
    out = torch.empty(1, 2, 3, 3)
    assert lib.pf_maxpool_nchw(x.data_ptr(), out.data_ptr(), 2, 5, 5, 3, 3, 3, 3, 2, 2, 1, 1, 1) == 0
    assert torch.equal(out, F.max_pool2d(x, 3, 2, 1))
