"""Does pfconvert feed a user's model the way the user does? The scenario of issue 13, on a model trained here.

A user trains a model in their own loop: Fashion-MNIST's whole 28 px image resized to 64 px (bilinear), grey copied
to three channels, ImageNet mean and std. They score it on the 10k test images in that loop. Then they convert it
with pfconvert and ask ``pfconvert eval --original`` for the same figure, with and without telling pfconvert their
interpolation; they fine-tune the converted model and score the exported student both in their own loop and with
``pfconvert eval``. The table puts the figures side by side; they should agree to within 0.1 point.

Usage::

    python benchmarks/preprocessing_match.py                    # mobilenetv2_050 at 64 px, about 10 minutes, 2 cores
    python benchmarks/preprocessing_match.py --train-images 2000 --epochs 1 --finetune-images 512   # a quick run
    python benchmarks/preprocessing_match.py --pfconvert "python -m pfconvert"   # another install's command line

``--pfconvert`` runs the conversion and evaluations through another command line (an older checkout, say), so that
what it does to the same trained model can be compared.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

try:
    from ._results import add_docs_flag, write_page  # imported as benchmarks.preprocessing_match (tests, python -m)
except ImportError:
    from _results import add_docs_flag, write_page  # run as a script: its directory is sys.path[0]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def user_tensors(images: np.ndarray, size: int) -> torch.Tensor:
    """The user's preprocessing: the whole image resized to ``size`` (bilinear), RGB, ImageNet mean/std."""
    out = torch.empty((len(images), 3, size, size))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for i, image in enumerate(images):
        rgb = np.asarray(Image.fromarray(image).convert("RGB").resize((size, size), Image.BILINEAR))
        out[i] = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - mean) / std
    return out


@torch.no_grad()
def user_top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The user's evaluation loop: top-1 (percent) in batches of 256."""
    model.eval()
    hits = sum(int((model(x[i:i + 256]).argmax(-1) == y[i:i + 256]).sum()) for i in range(0, len(x), 256))
    return 100.0 * hits / len(x)


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The user's training loop: AdamW, cosine schedule, batch 64, horizontal flips."""
    steps = epochs * (len(x) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for epoch in range(epochs):
        for i in torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).split(64)[: len(x) // 64]:
            batch = x[i]
            flip = torch.rand(len(batch)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            opt.zero_grad()
            F.cross_entropy(model(batch), y[i]).backward()
            opt.step()
            sched.step()


def run(cli: list[str], args: list[str]) -> str:
    """Run the command line; its stdout (stderr goes to ours)."""
    print("$ " + shlex.join(["pfconvert", *args]), file=sys.stderr)
    return subprocess.run([*cli, *args], check=True, capture_output=False, stdout=subprocess.PIPE, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2_050")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--finetune-images", type=int, default=6000, help="0: no fine-tune")
    parser.add_argument("--out", type=Path, default=Path("runs/preprocessing_match"))
    parser.add_argument("--pfconvert", default=f"{sys.executable} -m pfconvert", help="the command line to test")
    add_docs_flag(parser)
    args = parser.parse_args()
    from pfconvert.data import open_split, resolve_source
    from pfconvert.report import describe_machine

    begin = time.perf_counter()
    cli = shlex.split(args.pfconvert)
    source = resolve_source("fashion-mnist")
    train_split = open_split(source, "train", limit=args.train_images, seed=0, val_fraction=0.1)
    test = open_split(source, "test")
    x, y = user_tensors(train_split.images, args.size), torch.tensor(train_split.labels)
    tx, ty = user_tensors(test.images, args.size), torch.tensor(test.labels)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10)
    train(model, x, y, args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "user-model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    rows = [("original", "the user's own loop", f"{user_top1(model, tx, ty):.2f}")]
    common = [args.model, "--rule", "maxpool", "--checkpoint", str(weights), "--num-classes", "10",
              "--input-size", f"3,{args.size},{args.size}", "--overwrite"]
    evaluate = ["--data", "fashion-mnist", "--workers", "1", "--json"]
    for label, extra, out in (("pfconvert eval --original, no data flags", [], "defaults"),
                              ("pfconvert eval --original, --interpolation bilinear at convert",
                               ["--interpolation", "bilinear"], "bilinear")):
        artifact = args.out / out
        run(cli, ["convert", *common, *extra, "--out", str(artifact)])
        report = json.loads(run(cli, ["eval", str(artifact), "--original", *evaluate]))
        rows.append(("original", label, f"{report['metrics']['original']['top1']:.2f}"))
    if args.finetune_images:
        artifact = args.out / "bilinear"
        run(cli, ["finetune", str(artifact), "--data", "fashion-mnist", "--train-images", str(args.finetune_images),
                  "--batch-size", "64", "--workers", "1", "--augment", "none", "--bn-recalib-images", "512",
                  "--overwrite", "--quiet", "--json"])
        report = json.loads(run(cli, ["eval", str(artifact), *evaluate]))
        import pfconvert

        student = pfconvert.load(artifact)
        rows += [("fine-tuned student", "the user's own loop", f"{user_top1(student, tx, ty):.2f}"),
                 ("fine-tuned student", "pfconvert eval", f"{report['metrics']['student']['top1']:.2f}")]
    table = "\n".join([f"Test top-1 (%) on the {len(test)} Fashion-MNIST test images; {args.model} trained "
                       f"{args.epochs} epochs on {len(x)} training images at {args.size} px (whole image, bilinear, "
                       "ImageNet mean/std) in the user's own loop.", "", "| model | scored by | test top-1 |",
                       "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]) + "\n"
    machine = f"{describe_machine()}, {time.perf_counter() - begin:.0f} s total"
    print(f"Machine: {machine}\n\n{table}")
    if args.write_docs:
        write_page("preprocessing-match", "pfconvert scores a user's model as the user's own loop does", table,
                   machine)


if __name__ == "__main__":
    main()
