"""Loader workers start from a fork server once OpenVINO has run in the process (forked workers crashed it)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from pfconvert.data.loaders import make_loader


def _loader(workers: int):
    return make_loader(TensorDataset(torch.zeros(4, 1)), list(range(4)), 2, workers, False, False, 0)


def test_workers_are_forked_without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    assert _loader(2).multiprocessing_context is None  # torch's default (fork on Linux)


def test_workers_start_from_a_fork_server_once_openvino_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", object())
    assert _loader(2).multiprocessing_context.get_start_method() == "forkserver"
    assert _loader(0).multiprocessing_context is None  # no workers, no context
