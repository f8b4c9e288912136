"""Fuzzing weight files (hypothesis, bounded): a truncated or corrupted ``.safetensors`` file or torch state dict
given as ``checkpoint`` or ``pretrained_file`` loads (a flipped byte in the tensor data is still a valid file) or
gives a one-line ``PfconvertError``; never another exception."""

from __future__ import annotations


import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import pfconvert
from pfconvert.errors import PfconvertError

pytestmark = pytest.mark.slow

MODEL = "test_efficientnet"


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of a valid safetensors file and a valid torch file of the model's state dict."""
    root = tmp_path_factory.mktemp("fuzz-weights")
    state = {k: v.contiguous() for k, v in timm.create_model(MODEL).state_dict().items()}
    save_file(state, str(root / "w.safetensors"))
    torch.save(state, root / "w.pth")
    return {".safetensors": (root / "w.safetensors").read_bytes(), ".pth": (root / "w.pth").read_bytes()}


# An edit: truncate at a fraction of the file, or overwrite bytes at a position (most of them within the first
# 4 KiB, where the safetensors header and the zip directory's start are), or insert bytes.
EDIT = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.binary(max_size=0)),
    st.tuples(st.just("flip"), st.one_of(st.integers(0, 4096).map(float), st.floats(0, 1)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


def _mutate(data: bytes, edits: list[tuple[str, float, bytes]]) -> bytes:
    for kind, where, payload in edits:
        at = int(where) if where > 1 else int(where * len(data))
        at = min(max(at, 0), len(data))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            data = data[:at] + payload + data[at + len(payload):]
        else:
            data = data[:at] + payload + data[at:]
    return data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".safetensors", ".pth"]), option=st.sampled_from(["checkpoint", "pretrained_file"]),
       edits=st.lists(EDIT, min_size=1, max_size=3))
def test_a_damaged_weights_file_loads_or_fails_in_one_line(originals: dict[str, bytes],
                                                            tmp_path_factory: pytest.TempPathFactory, suffix: str,
                                                            option: str, edits: list) -> None:
    path = tmp_path_factory.mktemp("case") / f"w{suffix}"
    path.write_bytes(_mutate(originals[suffix], edits))
    try:
        model = pfconvert.create_model(MODEL, **{option: path})
    except PfconvertError as exc:
        assert "\n" not in str(exc) and str(exc)
        assert "weights_only=False" not in str(exc)
    else:
        assert isinstance(model, torch.nn.Module)
