"""checkpoints/start.pt: what its key covers, and that a missing, foreign or damaged file means computing the start."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pfconvert.recover.finetune import FinetuneConfig
from pfconvert.recover.finetune.start import Accuracy, FinetuneStart
from pfconvert.recover.finetune.start_file import load_start, save_start, start_key, weights_digest


def _key(config: FinetuneConfig, student: nn.Module, **changes: object) -> str:
    where = {"data": {"train": "abc"}, "identity": "recipe", "device": "cpu fp32", "world_size": 1, **changes}
    return start_key(config, student, None, **where)  # type: ignore[arg-type]


def test_the_key_covers_what_acts_before_the_first_step_only() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    config = FinetuneConfig(data="x", reconstruct_images=64, block_steps=10)
    key = _key(config, student)
    after_start = config.model_copy(update={"lr": 3e-4, "train_images": 999, "epochs": 7, "augment": "none"})
    assert _key(after_start, student) == key
    for changed in ({"reconstruct_images": 32}, {"block_steps": 5}, {"seed": 1}, {"bn_recalib_images": 0}):
        assert _key(config.model_copy(update=changed), student) != key, changed
    assert _key(config, student, data={"train": "other"}) != key and _key(config, student, world_size=2) != key
    before = weights_digest(student)
    with torch.no_grad():
        student[1].running_mean += 1e-6  # a buffer counts as much as a weight
    assert weights_digest(student) != before and _key(config, student) != key


def test_a_missing_foreign_or_damaged_start_file_is_not_read(tmp_path: Path) -> None:
    student = nn.Linear(2, 2)
    path = tmp_path / "start.pt"
    assert load_start(path, "k") is None
    start = FinetuneStart(converted=Accuracy(10.0, 50.0, 32), reconstructed=Accuracy(80.0, 99.0, 32))
    save_start(path, "k", student, start, [{"torch": torch.get_rng_state()}])
    weights, read, rng = load_start(path, "k")  # type: ignore[misc]
    assert read == start and torch.equal(weights["weight"], student.weight) and len(rng) == 1
    assert load_start(path, "another key") is None
    path.write_bytes(b"not a checkpoint")
    assert load_start(path, "k") is None
