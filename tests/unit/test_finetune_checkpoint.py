"""Checkpoint files: atomic, ``weights_only``-loadable, RNG states restored exactly, clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pfconvert.errors import CheckpointError
from pfconvert.recover.finetune.checkpoint import (
    atomic_write,
    capture_rng,
    copy_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.pt"
    state = {"config": "{}", "run": {"epoch": 1, "history": [{"val_top1": 50.0}]}, "engine": {"w": torch.ones(3)},
             "rng": [capture_rng()], "world_size": 1}
    save_checkpoint(state, path)
    loaded = torch.load(path, weights_only=True)  # no pickled classes inside
    assert loaded["run"]["epoch"] == 1 and torch.equal(loaded["engine"]["w"], torch.ones(3))
    assert load_checkpoint(path)["format"] == "pfconvert.finetune.v1"
    copy_checkpoint(path, tmp_path / "ck" / "best.pt")
    assert load_checkpoint(tmp_path / "ck" / "best.pt")["world_size"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt", "last.pt"]  # no temp files left


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "file.pt"
    path.write_text("old")

    def failing(temp: Path) -> None:
        temp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, failing)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.pt"]


def test_rng_states_restore_exactly(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint({"rng": [capture_rng()]}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    restore_rng(load_checkpoint(tmp_path / "rng.pt")["rng"][0])
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pfconvert.finetune.v1 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
