"""End to end on real data (Fashion-MNIST): train an "existing model", convert it, fine-tune it, report.

For each model and rule: (1) train the original from scratch with labels only, (2) convert it with the rule and
measure the accuracy right after conversion, (3) fine-tune by distillation from the original with a budget of at most
30% of the original training's images, (4) measure the recovered accuracy, params, MACs and CPU latency, and
(5) draw the accuracy/latency plot. Results go to OUT/results.{json,md} and OUT/*/report.png.

    python examples/fashion_mnist/run.py                  # full run (CPU, about 20 minutes on 2 cores)
    python examples/fashion_mnist/run.py --quick          # smoke run on a few hundred images

Data: Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist), or --data PATH.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

import pfconvert
from pfconvert.artifact import save_weights
from pfconvert.finetune import FinetuneConfig, RichReporter, evaluate_artifact, finetune, run_finetune
from pfconvert.finetune.data import model_data_config
from pfconvert.report.plot import plot_report
from pfconvert.report.run import run_report
from pfconvert.zoo import create_model

PIPELINES: dict[str, list[str]] = {"mobilenetv2_050": ["maxpool"], "resnet26": ["r50-max", "r50-hybrid"]}


@dataclass
class Budget:
    """Images and epochs of the original training and of each fine-tune."""

    img_size: int
    train_images: int
    train_epochs: int
    finetune_epochs: int
    val_images: int | None
    batch_size: int


def parse_args() -> tuple[argparse.Namespace, Budget]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("runs/fashion_mnist"))
    parser.add_argument("--models", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--val-images", type=int, default=None, help="default: the whole 10k test split")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--retrain", action="store_true",
                        help="train the originals again even when OUT holds their weights from an earlier run")
    args = parser.parse_args()
    if args.quick:
        args.train_images, args.train_epochs, args.finetune_epochs, args.val_images = 512, 4, 1, 256
    budget = Budget(args.img_size, args.train_images, args.train_epochs, args.finetune_epochs, args.val_images,
                    args.batch_size)
    if budget.finetune_epochs > 0.3 * budget.train_epochs:
        parser.error("the fine-tune budget must stay within 30% of the original training (epochs x images)")
    return args, budget


def config(data: str, budget: Budget, epochs: int, **kw: object) -> FinetuneConfig:
    return FinetuneConfig(data=data, epochs=epochs, img_size=budget.img_size, limit_train=budget.train_images,
                          limit_val=budget.val_images, batch_size=budget.batch_size, workers=1, **kw)


def train_original(name: str, data: str, budget: Budget, out: Path, retrain: bool) -> tuple[Path, dict]:
    """Train the original from scratch on labels; returns its weights file and run summary.

    An earlier run's original (weights and ``finetune.json`` summary in ``out``) is reused unless ``retrain``.
    """
    weights, summary = out / "original.safetensors", out / "original-run" / "finetune.json"
    if not retrain and weights.is_file() and summary.is_file():
        return weights, json.loads(summary.read_text())
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    result = run_finetune(
        model, None, config(data, budget, budget.train_epochs, kd_weight=0.0, lr=2e-3, bn_recalib_batches=0),
        out / "original-run", data_cfg=model_data_config(model, budget.img_size), overwrite=True,
        reporter=RichReporter(), export=lambda m, _d: (save_weights(m, weights), weights)[1])
    return weights, result.as_dict()


def run_rule(name: str, rule: str, weights: Path, data: str, budget: Budget, out: Path, orig_run: dict) -> dict:
    """Convert, evaluate, fine-tune, evaluate, report one rule; returns a results row."""
    size = (3, budget.img_size, budget.img_size)
    model, record = pfconvert.convert(name, rule, checkpoint=weights, input_size=size, num_classes=10)
    art = pfconvert.save(model, record, out / rule, overwrite=True)
    before = evaluate_artifact(art, data, weights="converted", original=True, img_size=budget.img_size,
                               limit=budget.val_images)
    ft = finetune(art, config(data, budget, budget.finetune_epochs, lr=1e-3), overwrite=True)
    after = evaluate_artifact(art, data, weights="finetuned", img_size=budget.img_size, limit=budget.val_images)
    original_top1, converted_top1 = before.metrics["original"].top1, before.metrics["student"].top1
    ft_top1 = after.metrics["student"].top1
    original = create_model(name, checkpoint=weights, num_classes=10).eval()
    report = run_report(original, pfconvert.load(art).eval(), names=(name, f"{name}+{rule}"), input_size=size,
                        batch_sizes=(1, 64), accuracies=(original_top1, ft_top1), runs=15, max_seconds=10)
    plot_report(report, art / "report.png")
    (art / "report.json").write_text(report.to_json())
    lat = {f"{r.backend_label} bs{r.batch_size}": round(r.latency_ratio, 3) for r in report.latency}
    return {
        "model": name, "rule": rule, "original_top1": original_top1, "converted_top1": converted_top1,
        "finetuned_top1": ft_top1, "gap": round(original_top1 - ft_top1, 2),
        "params": [record.params_before, record.params_after],
        "macs": [report.original.macs, report.converted.macs],
        "latency_ratio_converted_over_original": lat,
        "budget_images_ratio": round(budget.finetune_epochs / budget.train_epochs, 3),
        "budget_seconds_ratio": round(ft.train_seconds / orig_run["train_seconds"], 3),
    }


def markdown(rows: list[dict], budget: Budget) -> str:
    lines = [f"Fashion-MNIST at {budget.img_size}px, original trained {budget.train_epochs} epochs x "
             f"{budget.train_images} images, fine-tune {budget.finetune_epochs} epochs (distillation).", "",
             "| model | rule | original top-1 | converted top-1 | fine-tuned top-1 | gap | params | MACs | "
             "fine-tune budget (images / seconds) | latency converted/original |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = ", ".join(f"{k}: {v:.2f}" for k, v in r["latency_ratio_converted_over_original"].items())
        lines.append(f"| {r['model']} | {r['rule']} | {r['original_top1']:.2f} | {r['converted_top1']:.2f} | "
                     f"{r['finetuned_top1']:.2f} | {r['gap']:+.2f} | {r['params'][0] / 1e6:.2f}M -> "
                     f"{r['params'][1] / 1e6:.2f}M | {r['macs'][0] / 1e6:.1f}M -> {r['macs'][1] / 1e6:.1f}M | "
                     f"{r['budget_images_ratio']:.0%} / {r['budget_seconds_ratio']:.0%} | {lat} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args, budget = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        weights, orig_run = train_original(name, args.data, budget, out, args.retrain)
        for rule in PIPELINES[name]:
            rows.append(run_rule(name, rule, weights, args.data, budget, out, orig_run))
            (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows, budget)
    (args.out / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
