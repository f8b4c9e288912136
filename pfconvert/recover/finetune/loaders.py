"""Samplers and loaders for fine-tuning (transforms come from :mod:`pfconvert.data.transforms`).

Resumability lives here. The training order of an epoch is a :class:`~torch.utils.data.DistributedSampler`
permutation fixed by ``(seed, epoch)`` (also with one process), and the augmentation of a sample is seeded by
``(seed, epoch, index)`` (:class:`SeededDataset`). So the batches of any epoch can be reproduced from any step, with
any number of loader workers, and a resumed run skips the batches it already consumed without reading them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ...data.config import DataConfig
from ...data.datasets import DataSource, ImageSamples, open_split, resolve_source
from ...data.loaders import make_loader
from ...data.transforms import build_transforms
from ...errors import DataError
from .config import FinetuneConfig

__all__ = [
    "DataBundle",
    "SeededDataset",
    "SkipSampler",
    "prepare_data",
    "check_resume_data",
    "train_loader",
    "steps_per_epoch",
    "recalibration_loader",
]


@dataclass
class DataBundle:
    """The training and validation splits of a dataset, with transforms attached, the data config they follow (as
    adapted to the images: :meth:`DataConfig.for_images`) and notes about how it was chosen."""

    source: DataSource
    train: ImageSamples
    val: ImageSamples
    data_cfg: DataConfig
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    """The training split's :meth:`~pfconvert.data.datasets.ImageSamples.fingerprint` (checkpoints record it, and
    ``--resume`` refuses other data: :func:`check_resume_data`)."""

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label."""
        return self.train.classes


def prepare_data(config: FinetuneConfig, data_cfg: DataConfig, num_classes: int, world_size: int = 1) -> DataBundle:
    """Open, subset, check and attach transforms to the training and validation splits; fail before any training if
    they cannot work.

    Raises:
        DataError: missing/empty/corrupt data, a class count that differs from the model's, or fewer training
            images than one batch per process.
    """
    source = resolve_source(config.data)
    train = open_split(source, "train", config.limit_train, config.seed, val_fraction=config.val_split)
    val = open_split(source, "val", config.limit_val, config.seed, classes=train.classes,
                     val_fraction=config.val_split)
    if len(train.classes) != num_classes:
        empty = train.empty_classes()
        hollow = f" (class folder(s) {', '.join(map(repr, empty[:5]))} hold no images)" if empty else ""
        raise DataError(
            f"the model has {num_classes} classes but {source.root} has {len(train.classes)}{hollow}; "
            f"convert the model with --num-classes {len(train.classes)}"
        )
    if len(train) < config.batch_size * world_size:
        raise DataError(
            f"{len(train)} training images is less than one batch ({config.batch_size} x {world_size} process(es)); "
            "lower --batch-size or raise --limit-train"
        )
    train.mode = val.mode = data_cfg.image_mode
    data_cfg, note = data_cfg.for_images(train.image_size())
    train.transform, val.transform = build_transforms(data_cfg, config.augment)
    notes = [f"{train.description}: {len(train)} images; {val.description}: {len(val)} images",
             f"input: {data_cfg.describe()}", *([note] if note else [])]
    return DataBundle(source, train, val, data_cfg, notes, train.fingerprint())


def check_resume_data(saved: str | None, bundle: DataBundle) -> None:
    """Refuse to resume a run on other training data than it was trained on (``saved``: the fingerprint its
    checkpoint recorded; None for checkpoints written before fingerprints were)."""
    if saved is not None and saved != bundle.fingerprint:
        raise DataError(f"{bundle.source.name} is not the data the saved run trained on (the training images' names, "
                        "sizes, pixels or labels differ); resume with the same --data (and limits), or start again "
                        "with --overwrite")


@contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seed the python and torch (CPU) RNGs inside the block and restore their states after it.

    These are the generators timm and torchvision transforms draw from. numpy's global RNG is left alone (none of the
    transforms built here use it, and reseeding it would cost more than the transform itself); so is CUDA's
    (``torch.manual_seed`` would queue a lazy CUDA seeding that records a stack trace on every call).
    """
    py_state, torch_state = random.getstate(), torch.default_generator.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        torch.default_generator.set_state(torch_state)


class SeededDataset(Dataset):
    """Wraps a dataset so that the random transform of sample ``i`` in epoch ``e`` depends only on (seed, e, i)."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int = 0) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with _seeded_rngs(((self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + index) % 2**63):
            return self.dataset[index]


class SkipSampler(Sampler[int]):
    """Yields the indices of ``sampler`` after the first ``skip`` (the samples a resumed epoch already consumed)."""

    def __init__(self, sampler: Sampler[int], skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip:])

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]


def train_loader(bundle: DataBundle, config: FinetuneConfig, epoch: int, rank: int = 0, world_size: int = 1,
                 skip_batches: int = 0, pin_memory: bool = False) -> DataLoader:
    """The training loader of ``epoch`` for process ``rank``, starting after ``skip_batches`` batches."""
    sampler = DistributedSampler(bundle.train, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    dataset = SeededDataset(bundle.train, config.seed, epoch)
    return make_loader(dataset, SkipSampler(sampler, skip_batches * config.batch_size), config.batch_size,
                   config.workers, True, pin_memory, config.seed + epoch)


def steps_per_epoch(bundle: DataBundle, config: FinetuneConfig, world_size: int = 1) -> int:
    """Number of full batches each process sees per epoch (the last partial batch is dropped)."""
    return (len(bundle.train) // world_size) // config.batch_size


class _EvalView(Dataset):
    """The training images through the evaluation transform (no augmentation)."""

    def __init__(self, dataset: ImageSamples, transform: Callable) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.dataset.load(index)), self.dataset.labels[index]


def recalibration_loader(bundle: DataBundle, config: FinetuneConfig, rank: int = 0, world_size: int = 1,
                         pin_memory: bool = False, count: int | None = None) -> DataLoader:
    """Batches of a fixed random subset of training images, un-augmented, for BatchNorm re-estimation and
    reconstruction; ``count`` images in all (default: ``bn_recalib_images``), sharded over ``world_size``
    processes."""
    if count is None:
        count = config.bn_recalib_images
    count = min(len(bundle.train), count)
    pick = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(config.seed + 1))[:count]
    shard = pick[rank::world_size].tolist()
    view = _EvalView(bundle.train, bundle.val.transform)  # type: ignore[arg-type]
    return make_loader(view, shard, config.batch_size, config.workers, False, pin_memory,  # type: ignore[arg-type]
                   config.seed)
