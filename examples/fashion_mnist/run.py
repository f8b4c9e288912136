"""End to end on real data (Fashion-MNIST): train an "existing model", convert it, fine-tune it, report.

For each model and rule: (1) train the original from scratch with labels only, (2) convert it with the rule and
measure the accuracy right after conversion, (3) fine-tune by distillation from the original within 30% of the
original training's compute (counted in MACs: a training image costs 3 forwards; a fine-tune image costs 3 student
forwards plus 1 teacher forward; before training, each calibration image costs both models' forward up to every
layer the least-squares reconstruction refits, plus 3 student forwards for BatchNorm re-estimation), (4) measure the
recovered accuracy, params, MACs and CPU latency, and (5) draw the accuracy/latency plot. Results go to
OUT/results.{json,md} and OUT/<model>/<rule>/report.png (with --write-docs also docs/results/fashion-mnist.md).

Splits: the originals train and the fine-tunes train on the training images less a seeded 10% validation split;
every choice (the originals' and fine-tunes' best epoch, the recipes noted below) is made on that validation split,
and the figures reported (original and fine-tuned top-1) are on the 10k test images, seen by nothing before.

Recipes (``--recipes``), each within the same compute budget:

- ``default``: least-squares reconstruction, BatchNorm re-estimation, then logit distillation (plus labels);
- ``features``: the same, plus feature distillation: each block holding a replaced layer is trained to give the
  original's output of that block (``FinetuneConfig.feature_weight``);
- ``lowres``: the same as ``default`` at half the input size, where a fine-tune image costs about a quarter (a
  cheaper distillation over more images: up to the whole training split per epoch, for the same 3 epochs, so it may
  use less than the budget); its best epoch is chosen on the validation split at that size, and its reported val
  and test top-1 are measured at the model's own size.

Rows are merged into OUT/results.json by (model, rule, recipe), so runs of single rules or recipes add up.

    python examples/fashion_mnist/run.py                  # convnext_atto and resnet26 (CPU, about 19 minutes, 2 cores)
    python examples/fashion_mnist/run.py --models vit     # the ViT (vit-max), about 10 minutes
    python examples/fashion_mnist/run.py --models mobilenetv2_050   # MobileNetV2 (maxpool, dw-hybrid[-keepnorm])
    python examples/fashion_mnist/run.py --models regnetx_002       # a RegNet with bottleneck-hybrid / -max
    python examples/fashion_mnist/run.py --models efficientnet_lite0  # EfficientNet-Lite0 at 32 px
    python examples/fashion_mnist/run.py --models mobilenetv2_050 --rules dw-hybrid --recipes default features lowres
    python examples/fashion_mnist/run.py --models mobilenetv2_050 --rule-file plan.yaml   # a `pfconvert plan` rule
    python examples/fashion_mnist/run.py --quick          # smoke run on a few hundred images

Data: Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist), or --data PATH.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pfconvert
from pfconvert.cli import RichReporter
from pfconvert.conversion import save_weights
from pfconvert.data import resolve_data_config
from pfconvert.graph import Call, trace_dataflow
from pfconvert.recover import find_consumers
from pfconvert.recover.finetune import run_finetune
from pfconvert.report import plot_report

BUDGET_SHARE = 0.3  # fine-tune compute / original training compute
# The fine-tunes train on un-augmented images (the originals on light augmentation: random crops of 60-100% of the
# area, flips). Measured with the same recipes otherwise, fine-tuned top-1 with "light" -> "none": mobilenetv2_050
# 72.04 -> 75.95 (batch 64, lr 1e-3), resnet26 r50-max 85.07 -> 87.17, r50-hybrid 85.54 -> 87.54, ViT 74.98 -> 77.78.
# In a short distillation the teacher is most informative on the images as it sees them at test time.
FINETUNE_AUGMENT = "none"


@dataclass(frozen=True)
class Pipeline:
    """One "existing model": the timm name and kwargs, its input size, its training recipe (lr, batch size), the
    rules to try and the fine-tune recipe (lr, batch size, BatchNorm handling)."""

    model: str
    rules: tuple[str, ...]
    img_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 2e-3
    finetune_lr: float = 1e-3
    batch_size: int = 128
    finetune_batch_size: int = 128
    freeze_bn: bool = False  # fine-tune with fixed BatchNorm statistics


PIPELINES: dict[str, Pipeline] = {
    # MobileNetV2 needs more steps and a higher learning rate than the others to train well from scratch. Its fine-tune
    # keeps BatchNorm statistics fixed and gains from smaller steps (measured, un-augmented fine-tunes: 76.94% at batch
    # 32, lr 7e-4; 76.81% at 16, 5e-4; 76.62% at 64, 5e-4; 75.95% at 64, 1e-3; 72.32% at 64, 1e-3 without --freeze-bn)
    # dw-hybrid keeps the stride-2 and first-stage depthwise convs; -keepnorm keeps each replaced conv's BN and ReLU6
    "mobilenetv2_050": Pipeline("mobilenetv2_050", ("maxpool", "dw-hybrid", "dw-hybrid-keepnorm"), 64, lr=4e-3,
                                finetune_lr=7e-4, batch_size=64, finetune_batch_size=32, freeze_bn=True),
    # measured at batch 64, lr 1.5e-3 vs batch 128, lr 3e-3 (augmented fine-tunes): r50-max 85.30% vs 85.01%,
    # r50-hybrid 85.48% vs 85.30%
    "resnet26": Pipeline("resnet26", ("r50-max", "r50-hybrid"), 32, finetune_lr=1.5e-3, finetune_batch_size=64),
    # the paper's own model, with resnet26's recipe (not tuned); 1.75x resnet26's MACs at 32 px (84M vs 48M)
    "resnet50": Pipeline("resnet50", ("r50-max", "r50-hybrid"), 32, finetune_lr=1.5e-3, finetune_batch_size=64),
    # a RegNet (grouped 3x3 convs, group width 8) with the family rules, found from the dataflow: its 13 bottleneck
    # 3x3 convs (recipe: resnet26's, not tuned)
    "regnetx_002": Pipeline("regnetx_002", ("bottleneck-hybrid", "bottleneck-max"), 32, finetune_lr=1.5e-3,
                            finetune_batch_size=64),
    # ConvNeXt: every depthwise conv (7x7) sits in a residual block; with stride-4 patches, a 32 px input leaves 8x8,
    # 4x4, 2x2 and 1x1 token maps, so in the last stages the 7x7 max-pool is a max over the whole map (recipe not tuned)
    # EfficientNet-Lite0 (inverted bottlenecks, ReLU6, no SE) at 32 px: its 5 stride-2 stages leave a 1x1 map, so its
    # last stages' 3x3 / 5x5 max-pools see zero padding only at the borders (-inf pads); recipe: mobilenetv2_050's
    "efficientnet_lite0": Pipeline("efficientnet_lite0", ("maxpool", "dw-hybrid", "dw-hybrid-keepnorm"), 32, lr=4e-3,
                                   finetune_lr=7e-4, batch_size=64, finetune_batch_size=32, freeze_bn=True),
    "convnext_atto": Pipeline("convnext_atto", ("maxpool",), 32, lr=2e-3, finetune_lr=7e-4, finetune_batch_size=32),
    # a ViT with 8x8 = 64 patch tokens (4 px patches of a 32 px image), 6 blocks of width 96; its fine-tune gains from
    # more, smaller steps (measured, augmented fine-tunes: 74.72% at batch 32, lr 7e-4; 74.48% at 64, 1e-3; 73.22% at
    # 128, 5e-4)
    "vit": Pipeline("vit_tiny_patch16_224", ("vit-max",), 32,
                    {"img_size": 32, "patch_size": 4, "embed_dim": 96, "depth": 6, "num_heads": 3}, lr=1e-3,
                    finetune_lr=7e-4, finetune_batch_size=32),
}


RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "features": {"feature_weight": 1.0},
    "lowres": {"img_scale": 0.5},
}
"""Fine-tune recipes: FinetuneConfig overrides, and ``img_scale`` (the fine-tune's input size over the model's)."""


@dataclass
class Budget:
    """Images and epochs of the original training and of each fine-tune."""

    train_images: int
    train_epochs: int
    finetune_epochs: int
    val_images: int | None
    test_images: int | None
    calib_images: int = 1024  # for the least-squares reconstruction and for BatchNorm re-estimation
    latency_runs: int = 10  # interleaved timing rounds per latency cell of the report


def parse_args() -> tuple[argparse.Namespace, Budget]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("runs/fashion_mnist"))
    parser.add_argument("--models", nargs="*", default=["convnext_atto", "resnet26"], choices=list(PIPELINES),
                        help="pipelines to run (default: convnext_atto and resnet26; vit for the transformer redesign, "
                             "mobilenetv2_050 for a MobileNetV2, which recovers least)")
    parser.add_argument("--train-images", type=int, default=12000)
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--val-images", type=int, default=None,
                        help="validation images (default: the whole validation split, 10%% of the training images)")
    parser.add_argument("--test-images", type=int, default=None, help="default: the whole 10k test split")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--rules", nargs="*", default=None, help="only these of each pipeline's rules")
    parser.add_argument("--rule-file", type=Path, nargs="*", default=[],
                        help="also these rule files (e.g. written by `pfconvert plan --write-rule`), for every model")
    parser.add_argument("--recipes", nargs="*", default=["default"], choices=list(RECIPES),
                        help="fine-tune recipes to run for each rule (see above)")
    parser.add_argument("--write-docs", action="store_true", help="also write docs/results/fashion-mnist.md")
    parser.add_argument("--retrain", action="store_true",
                        help="train the originals again even when OUT holds their weights from an earlier run")
    args = parser.parse_args()
    if args.quick:
        args.train_images, args.train_epochs, args.finetune_epochs, args.val_images = 512, 4, 1, 256
        args.test_images = 256
    budget = Budget(args.train_images, args.train_epochs, args.finetune_epochs, args.val_images, args.test_images,
                    128 if args.quick else 1024, 3 if args.quick else 10)
    return args, budget


def config(data: str, budget: Budget, pipe: Pipeline, epochs: int, **kw: Any) -> pfconvert.FinetuneConfig:
    values: dict[str, Any] = {"data": data, "epochs": epochs, "img_size": pipe.img_size,
                              "limit_train": budget.train_images, "limit_val": budget.val_images,
                              "batch_size": pipe.batch_size, "workers": 1}
    return pfconvert.FinetuneConfig(**{**values, **kw})


def train_original(pipe: Pipeline, data: str, budget: Budget, out: Path, retrain: bool) -> tuple[Path, dict, bool]:
    """Train the original from scratch on labels; returns its weights file, run summary and whether it was trained
    now.

    An earlier run's original (weights and ``finetune.json`` summary in ``out``) is reused unless ``retrain``.
    """
    weights, summary = out / "original.safetensors", out / "original-run" / "finetune.json"
    recipe = {"model": pipe.model, "kwargs": pipe.kwargs, "img_size": pipe.img_size, "lr": pipe.lr,
              "batch_size": pipe.batch_size, "train_images": budget.train_images, "train_epochs": budget.train_epochs,
              "data": data}
    if not retrain and weights.is_file() and summary.is_file():
        saved = json.loads(summary.read_text())
        if saved.get("example_recipe") == recipe:
            return weights, saved, False
        print(f"{out}: the saved original was trained differently; training it again", file=sys.stderr)
    torch.manual_seed(0)
    model = pfconvert.create_model(pipe.model, num_classes=10, **pipe.kwargs)
    result = run_finetune(
        model, None, config(data, budget, pipe, budget.train_epochs, kd_weight=0.0, lr=pipe.lr, bn_recalib_images=0,
               eval_every=budget.train_epochs),  # validated once, after the last epoch
        out / "original-run", data_cfg=resolve_data_config(model, input_size=(3, pipe.img_size, pipe.img_size)),
        overwrite=True,
        reporter=RichReporter(), export=lambda m, _d: (save_weights(m, weights), weights)[1])
    run = {**result.to_dict(), "example_recipe": recipe}
    summary.write_text(json.dumps(run, indent=2))
    return weights, run, True


def _layer_macs(call: Call) -> int:
    """MACs of one Conv2d or Linear call (fvcore's convention: one multiply-add is one); 0 for any other module."""
    module, out = call.module, call.output_shape
    if out is None:
        return 0
    if isinstance(module, nn.Conv2d):
        return math.prod(out[1:]) * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return math.prod(out[1:]) * module.in_features
    return 0


def forward_shares(model: nn.Module, size: tuple[int, int, int], paths: list[str]) -> list[float]:
    """For each layer in ``paths``, the share of ``model``'s conv and Linear MACs computed before the layer is first
    called: what one reconstruction pass costs (it stops at the layer it refits)."""
    before: dict[str, int] = {}
    done = 0
    for call in trace_dataflow(model, size).calls:
        if call.path in paths and call.path not in before:
            before[call.path] = done
        done += _layer_macs(call)
    return [before[path] / done for path in paths]


def finetune_images(budget: Budget, macs_original: int, macs_converted: int, shares: list[tuple[float, float]],
                    minimum: int = 1, macs_teacher: int | None = None) -> tuple[int, float]:
    """Training images per fine-tune epoch that keep the whole fine-tune within BUDGET_SHARE of the original's
    training compute, and the resulting share.

    Charged before training, per calibration image: each reconstruction pass (``shares``: the converted and the
    original model's forward share up to each refit layer) and 3 student forwards for BatchNorm re-estimation (the
    calibration loss before, the statistics, the loss after). At least ``minimum`` images (one batch), even where that
    exceeds the share (tiny --quick budgets): the share returned says so.

    ``macs_original`` is the original's forward at its training size; ``macs_converted`` and ``macs_teacher`` (default:
    ``macs_original``) are the student's and the teacher's forward at the fine-tune's size.
    """
    teacher = macs_original if macs_teacher is None else macs_teacher
    original = budget.train_images * budget.train_epochs * 3 * macs_original
    passes = sum(converted * macs_converted + theirs * teacher for converted, theirs in shares)
    fixed = budget.calib_images * (passes + 3 * macs_converted)
    per_image = 3 * macs_converted + teacher
    images = int((BUDGET_SHARE * original - fixed) / (per_image * budget.finetune_epochs))
    images = max(min(images, budget.train_images), minimum)
    return images, (fixed + images * budget.finetune_epochs * per_image) / original


def run_rule(pipe: Pipeline, rule: str, weights: Path, data: str, budget: Budget, out: Path, orig_run: dict,
             recipe_name: str = "default") -> dict:
    """Convert, fine-tune with one of RECIPES (the run validates the converted model before its first step and after
    every epoch), report one rule; returns a results row."""
    size = (3, pipe.img_size, pipe.img_size)
    overrides = dict(RECIPES[recipe_name])
    ft_px = max(8, round(pipe.img_size * overrides.pop("img_scale", 1.0)))
    ft_size = (3, ft_px, ft_px)
    torch.manual_seed(0)  # replacements with weights of their own (the ViT's token mixers) start the same every run
    model, record = pfconvert.convert(pipe.model, rule, checkpoint=weights, input_size=size, num_classes=10,
                                      **pipe.kwargs)
    name = record.rules.name if Path(rule).suffix in (".yaml", ".yml") else rule
    art = pfconvert.save(model, record, out / (name if recipe_name == "default" else f"{name}.{recipe_name}"),
                         overwrite=True)
    original = pfconvert.create_model(pipe.model, checkpoint=weights, num_classes=10, **pipe.kwargs).eval()
    macs = (pfconvert.count_macs(original, size).macs, pfconvert.count_macs(model, size).macs)
    ft_macs = macs if ft_size == size else (pfconvert.count_macs(original, ft_size).macs,
                                            pfconvert.count_macs(model, ft_size).macs)
    refits = list(find_consumers(model, original, size))
    shares = list(zip(forward_shares(model, ft_size, refits), forward_shares(original, ft_size, refits)))
    images, share = finetune_images(budget, macs[0], ft_macs[1], shares, minimum=pipe.finetune_batch_size,
                                    macs_teacher=ft_macs[0])
    started = time.perf_counter()
    recipe = config(data, budget, pipe, budget.finetune_epochs, lr=pipe.finetune_lr, limit_train=images,
                    reconstruct_images=budget.calib_images if refits else 0,
                    bn_recalib_images=budget.calib_images, img_size=ft_px,
                    batch_size=pipe.finetune_batch_size, freeze_bn=pipe.freeze_bn, eval_teacher=False,
                    augment=FINETUNE_AUGMENT, **overrides)
    ft = pfconvert.finetune(art, recipe, overwrite=True)
    # the original's top-1 is its training run's last validation (same weights, images and transforms); the fine-tune
    # validates the student as converted before its first step, and every epoch after; the exported fine-tuned
    # weights are those of its best epoch (epoch 0, the start after reconstruction, if no epoch beat it)
    if ft.best is None or orig_run.get("final") is None:
        raise SystemExit(f"{art}: the fine-tune or the original's training ended without a validated epoch")
    converted_top1, ft_val_top1, start = ft.start.converted.top1, ft.best["val_top1"], ft.start
    finetune_seconds = time.perf_counter() - started
    if ft_px != pipe.img_size:  # chosen at the fine-tune's size; compared at the model's
        ft_val_top1 = pfconvert.evaluate_artifact(art, data, split="val", img_size=pipe.img_size,
                                                  limit=budget.val_images, workers=1).metrics["student"].top1
    # the figures: the original and the exported fine-tuned model on the test split, at the model's input size
    test = pfconvert.evaluate_artifact(art, data, split="test", original=True, limit=budget.test_images, workers=1,
                                       img_size=pipe.img_size)
    original_top1, ft_top1 = test.metrics["original"].top1, test.metrics["student"].top1
    report = pfconvert.run_report(original, pfconvert.load(art).eval(), names=(pipe.model, f"{pipe.model}+{rule}"),
                        input_size=size, batch_sizes=(1, 64), accuracies=(original_top1, ft_top1),
                        runs=budget.latency_runs, max_seconds=5)
    plot_report(report, art / "report.png", overwrite=True)
    (art / "report.json").write_text(report.to_json())
    lat = {f"{r.backend_label} bs{r.batch_size}": round(r.latency_ratio, 3) for r in report.latency}
    report_seconds = time.perf_counter() - started - finetune_seconds
    return {
        "model": pipe.model, "rule": name, "recipe": recipe_name, "img_size": pipe.img_size, "original_top1": original_top1,
        "original_val_top1": orig_run["final"]["val_top1"], "converted_top1": converted_top1,
        "finetuned_val_top1": ft_val_top1, "test_images": test.metrics["student"].count,
        "reconstructed_top1": refit.top1 if (refit := start.recalibrated or start.reconstructed) else None,
        "finetuned_top1": ft_top1, "best_epoch": ft.best["epoch"], "gap": round(original_top1 - ft_top1, 2),
        "params": [record.params_before, record.params_after], "macs": list(macs),
        "latency_ratio_converted_over_original": lat,
        "finetune_images_per_epoch": images, "budget_compute_ratio": round(share, 3),
        "budget_seconds_ratio": round(ft.train_seconds / orig_run["train_seconds"], 3),
        "seconds": {"finetune_run": round(finetune_seconds), "report": round(report_seconds)},
    }


def markdown(rows: list[dict], budget: Budget, wall: str) -> str:
    tested = rows[0]["test_images"] if rows else 0
    lines = [wall, "", (f"Fashion-MNIST, originals trained {budget.train_epochs} epochs x {budget.train_images} images; "
              f"fine-tune {budget.finetune_epochs} epochs (reconstruction, then distillation) budgeted at "
              f"{BUDGET_SHARE:.0%} of the original's training compute (column 'fine-tune compute': the share used). "
              f"Test top-1 on {tested} test images (original and fine-tuned: the figures); val top-1 on the validation "
              "split carved from the training images (converted, after reconstruction and BatchNorm re-estimation: "
              "what the runs chose on)."), "",
             ("| model | px | rule | recipe | original test top-1 | converted val top-1 | + reconstruction, BN (val) | "
              "fine-tuned val top-1 | fine-tuned test top-1 | gap (test) | params | MACs | fine-tune compute / seconds | "
              "latency converted/original |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = ", ".join(f"{k}: {v:.2f}" for k, v in r["latency_ratio_converted_over_original"].items())
        rec = f"{r['reconstructed_top1']:.2f}" if r["reconstructed_top1"] is not None else "-"
        lines.append(f"| {r['model']} | {r['img_size']} | {r['rule']} | {r.get('recipe', 'default')} | "
                     f"{r['original_top1']:.2f} | {r['converted_top1']:.2f} | {rec} | {r['finetuned_val_top1']:.2f} | "
                     f"{r['finetuned_top1']:.2f} | {r['gap']:+.2f} | "
                     f"{r['params'][0] / 1e6:.2f}M -> {r['params'][1] / 1e6:.2f}M | {r['macs'][0] / 1e6:.1f}M -> "
                     f"{r['macs'][1] / 1e6:.1f}M | {r['budget_compute_ratio']:.0%} / {r['budget_seconds_ratio']:.0%}"
                     f" | {lat} |")
    return "\n".join(lines) + "\n"


def merge_rows(path: Path, rows: list[dict]) -> list[dict]:
    """The rows of an earlier results.json at ``path``, with ``rows`` replacing those of the same (model, rule,
    recipe) and added after the others."""
    def key(row: dict) -> tuple[str, str, str]:
        return row["model"], row["rule"], row.get("recipe", "default")

    earlier = json.loads(path.read_text()) if path.is_file() else []
    mine = {key(r) for r in rows}
    return [r for r in earlier if key(r) not in mine] + rows


def main() -> None:
    args, budget = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, started, trained = [], time.perf_counter(), []
    for key in args.models:
        pipe, out = PIPELINES[key], args.out / key
        out.mkdir(parents=True, exist_ok=True)
        weights, orig_run, fresh = train_original(pipe, args.data, budget, out, args.retrain)
        seconds = orig_run["train_seconds"]
        trained.append(f"{key} trained in {seconds:.0f} s" if fresh else f"{key} reused")
        rules = [r for r in pipe.rules if args.rules is None or r in args.rules] + [str(f) for f in args.rule_file]
        for rule in rules:
            for recipe in args.recipes:
                rows.append(run_rule(pipe, rule, weights, args.data, budget, out, orig_run, recipe))
                merged = merge_rows(args.out / "results.json", rows)
                (args.out / "results.json").write_text(json.dumps(merged, indent=2))
                print(f"[{time.perf_counter() - started:.0f} s] {key} + {rule} ({recipe}) done", file=sys.stderr)
    wall = (f"Wall time {time.perf_counter() - started:.0f} s on {torch.get_num_threads()} CPU threads "
            f"(originals: {', '.join(trained)}).")
    table = markdown(merge_rows(args.out / "results.json", rows), budget, wall)
    (args.out / "results.md").write_text(table)
    print(table)
    if args.write_docs:
        write_docs(table)


def write_docs(table: str) -> None:
    """docs/results/fashion-mnist.md: the table with the command, machine and date."""
    import shlex

    from pfconvert.report import describe_machine

    page = ["# Fashion-MNIST study", "", "<!-- Written by the command below; run it again to refresh this page. -->",
            "", f"Command: `{shlex.join(['python', 'examples/fashion_mnist/run.py', *sys.argv[1:]])}`", "",
            f"Machine: {describe_machine()}", "", f"Date: {time.strftime('%Y-%m-%d')}", "", table]
    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "fashion-mnist.md"
    path.write_text("\n".join(page))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
