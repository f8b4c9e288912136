"""Training throughput of pfconvert's fine-tuning loop against a plain timm training step, side by side.

Both sides do the same work on the same machine, model, batch and data: the converted student (``pfconvert.convert``
with ``--rule``) learns from the original model by logit distillation -- student forward, teacher forward (no grad),
KL + cross-entropy, backward, optimizer step, scheduler step.

- **pfconvert**: :func:`pfconvert.finetune.loop.train_loop` as the runner drives it -- resumable sampler, per-sample
  seeded augmentation wrapper, the loss/NaN bookkeeping, step events consumed by the rich progress bar (drawn into
  a buffer) and a JSONL metrics log.
- **timm**: ``timm.task.LogitDistillationTask`` + ``create_optimizer_v2`` + ``create_scheduler_v2`` in a bare loop
  over a ``DataLoader``, the way timm's ``train.py`` steps, in timm's default (NCHW) memory format; and
- **timm --channels-last**: the same with ``train.py``'s ``--channels-last`` option, which pfconvert uses by default
  (on CPU too, where it speeds up the max-pools of converted models most).

The data are real Fashion-MNIST images, resized and normalised once into memory, so image decoding is out of the
measurement on both sides. Both loops are built once and warmed up, then timed in alternating chunks of ``--steps``
steps (the order flips every round), so a load change on a shared machine hits both alike. The table reports each
loop's median images/s and the ratios of pfconvert to each (the target is >= 1.0 against plain timm). This is a
benchmark, not a test.

Usage::

    python benchmarks/train_speed.py                        # mobilenetv2_050, 64 px, batch 32, CPU or CUDA
    python benchmarks/train_speed.py --threads 1 --rounds 20   # steadier on a busy CPU
    python benchmarks/train_speed.py --model resnet18 --rule r50-max --img-size 96 --json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import timm
import torch
from rich.console import Console
from rich.table import Table
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import LogitDistillationTask
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pfconvert
from pfconvert.cli.progress import RichReporter
from pfconvert.data.datasets import ImageSamples, open_split, resolve_source
from pfconvert.data.config import DataConfig, resolve_data_config
from pfconvert.data.transforms import build_transforms
from pfconvert.recover.dist import DistContext
from pfconvert.recover.finetune import FinetuneConfig
from pfconvert.recover.finetune.engine import build_engine
from pfconvert.recover.finetune.loaders import DataBundle
from pfconvert.recover.finetune.loop import RunState, StepEvent, train_loop
from pfconvert.recover.finetune.results import MetricsLog
from pfconvert.recover.precision import Precision, resolve_precision

__all__ = ["main", "run", "pfconvert_steps", "timm_steps"]


class _Cached(ImageSamples):
    """Pre-transformed image tensors held in memory."""

    def __init__(self, images: torch.Tensor, labels: list[int], classes: tuple[str, ...]) -> None:
        super().__init__(labels, classes)
        self.images = images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def _cached_data(data: str, count: int, data_cfg: DataConfig) -> _Cached:
    """``count`` training images of ``data`` through the eval transform, stacked in memory."""
    split = open_split(resolve_source(data), "train", limit=count, seed=0)
    transform = build_transforms(data_cfg, "none")[1]
    images = torch.stack([transform(split.load(i)) for i in range(len(split))])
    return _Cached(images, split.labels, split.classes)


def _config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(data=args.data, epochs=1000, batch_size=args.batch_size, workers=0, warmup_epochs=0.0,
                          log_every=20, bn_recalib_images=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pfconvert_steps(student: nn.Module, teacher: nn.Module, bundle: DataBundle, args: argparse.Namespace,
                    precision: Precision, log_dir: Path) -> Iterator[int]:
    """Steps of ``train_loop``, consumed as the runner does (progress bar, metrics log); yields images per step."""
    config = _config(args)
    spe = len(bundle.train) // config.batch_size
    ctx = DistContext(device=precision.device)
    engine = build_engine(student, teacher, config, precision, ctx, spe)
    reporter = RichReporter(Console(file=io.StringIO(), force_terminal=True))
    log = MetricsLog(log_dir / "metrics.jsonl")
    try:
        for event in train_loop(engine, bundle, config, ctx, RunState(spe)):
            assert isinstance(event, StepEvent), "the cached data should hold more batches than the steps"
            reporter.step(event)
            if event.global_step % config.log_every == 0:
                log.write({"step": event.global_step, **event.loss_values()})
            yield event.images
    finally:
        reporter.close()


def timm_steps(student: nn.Module, teacher: nn.Module, bundle: DataBundle, args: argparse.Namespace,
               precision: Precision, log_dir: Path) -> Iterator[int]:
    """Steps of a bare timm distillation loop with the same settings; yields images per step."""
    config = _config(args)
    memory_format = torch.channels_last if precision.channels_last else torch.preserve_format
    student.to(precision.device, memory_format=memory_format)
    teacher.to(precision.device, memory_format=memory_format)
    task = LogitDistillationTask(student, teacher, criterion=nn.CrossEntropyLoss(), temperature=config.temperature,
                                 distill_loss_weight=config.kd_weight, task_loss_weight=config.task_weight,
                                 device=precision.device, verbose=False).train()
    optimizer = create_optimizer_v2(student, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay)
    spe = len(bundle.train) // config.batch_size
    scheduler, _ = create_scheduler_v2(optimizer, sched=config.sched, num_epochs=config.epochs, warmup_epochs=0,
                                       min_lr=config.min_lr, step_on_epochs=False, updates_per_epoch=spe)
    scaler = precision.grad_scaler()
    train = bundle.train
    assert isinstance(train, _Cached)
    loader = DataLoader(TensorDataset(train.images, torch.tensor(train.labels)), batch_size=config.batch_size,
                        shuffle=True, drop_last=True)
    step = 0
    while True:
        for inputs, targets in loader:
            inputs, targets = precision.to_device(inputs), targets.to(precision.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = task(inputs, targets)["loss"]
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            step += 1
            scheduler.step_update(num_updates=step)
            yield len(targets)


def _timed(steps: Iterator[int], count: int, device: torch.device) -> float:
    """Images/s over the next ``count`` steps of ``steps``."""
    _sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += next(steps)
    _sync(device)
    return images / (time.perf_counter() - start)


def _models(args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    """(converted student, original teacher)."""
    torch.manual_seed(0)
    original = timm.create_model(args.model, num_classes=10)
    student, _ = pfconvert.convert(original, args.rule, input_size=(3, args.img_size, args.img_size))
    return student, original


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm the loops up, then time them in alternating chunks of ``args.steps`` steps; returns the figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    student, teacher = _models(args)
    data_cfg = resolve_data_config(teacher)
    data_cfg = data_cfg.with_size(args.img_size) if args.img_size else data_cfg
    total = args.warmup + args.rounds * args.steps
    cached = _cached_data(args.data, args.batch_size * (total + 1), data_cfg)
    bundle = DataBundle(resolve_source(args.data), cached, cached, data_cfg)
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(torch.device(device))
    plain = Precision(precision.device, precision.dtype, channels_last=False)  # timm's default memory format
    sides = {"pfconvert": (pfconvert_steps, precision), "timm": (timm_steps, plain),
             "timm --channels-last": (timm_steps, precision)}
    figures: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        loops = {name: make(copy.deepcopy(student), copy.deepcopy(teacher), bundle, args, where, Path(tmp))
                 for name, (make, where) in sides.items()}
        for steps in loops.values():
            _timed(steps, args.warmup, precision.device)
        for round_index in range(args.rounds):
            order = list(loops) if round_index % 2 == 0 else list(loops)[::-1]
            for name in order:
                figures[name].append(_timed(loops[name], args.steps, precision.device))
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(
                f"{name} {values[-1]:.1f}" for name, values in figures.items()) + " images/s", file=sys.stderr)
        for steps in loops.values():
            steps.close()  # type: ignore[attr-defined]
    medians = {name: statistics.median(values) for name, values in figures.items()}
    ratios = {name: medians["pfconvert"] / medians[name] for name in medians if name != "pfconvert"}
    return {"model": args.model, "rule": args.rule, "img_size": args.img_size, "batch_size": args.batch_size,
            "steps_per_round": args.steps, "rounds": args.rounds, "device": str(precision.device),
            "precision": precision.name, "threads": torch.get_num_threads(), "images_per_s": figures,
            "median": medians, "ratio": ratios["timm"], "ratios": ratios}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenetv2_050", help="timm model name")
    parser.add_argument("--rule", default="maxpool", help="pfconvert rule used to make the student")
    parser.add_argument("--data", default="fashion-mnist", help="dataset (IDX dir, ImageFolder, fashion-mnist)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each loop before timing")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table (or JSON) on stdout."""
    result = run(_parse(argv))
    if result["device"] == "cpu":
        result["note"] = "CPU timings on a shared machine are noisy; compare the medians of the same run only"
    if "--json" in (argv or sys.argv[1:]):
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['model']} ({result['rule']}), batch {result['batch_size']}, "
                        f"{result['img_size']} px, {result['device']} {result['precision']}, "
                        f"{result['threads']} threads", title_justify="left")
    for column in ("loop", "median images/s", "rounds"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for name, values in result["images_per_s"].items():
        table.add_row(name, f"{result['median'][name]:.1f}", " ".join(f"{v:.0f}" for v in values))
    for name, ratio in result["ratios"].items():
        table.add_row(f"ratio pfconvert / {name}", f"{ratio:.3f}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
