"""Recovery after conversion: each case (model, rule, teacher) with the default fine-tune against a manual sweep of
``--lr``, at the same budget, and the full max-pool conversion at several budgets (issue 27).

For each case the original (the *teacher*) is converted with the rule, then fine-tuned as ``pfconvert finetune`` does
with its defaults (the conversion family's recipe, the learning rate chosen by the probe), and again with each learning
rate of the sweep (1e-3, 3e-4, 1e-4, 3e-5) and everything else the same. Budgets are counted in training images as a
share of the images the teacher was trained on (``--budgets``, 30% by default for the recipe comparison; the first
rule's default recipe also runs at 100% and 300%). Every choice (the best validation point, the probe's learning rate)
is made on the validation split carved from the training images; the figures are on the test split.

Teachers:

- by default, the from-scratch case of examples/fashion_mnist/run.py: the example's pipeline of ``--model``
  (mobilenetv2_050 at 64 px: trained 10 epochs x 12,000 Fashion-MNIST images with labels only; reused from ``OUT``
  when an earlier run trained it the same way);
- ``--teacher NAME=WEIGHTS.safetensors --teacher-images N``: a timm model with a checkpoint of your own (for example
  an ImageNet-pretrained network fine-tuned on the data), N being the images it was trained on (the budgets' base).

    python benchmarks/recovery.py --write-docs                     # mobilenetv2_050, from scratch, full budgets
    python benchmarks/recovery.py --teacher efficientnet_lite1=lite1-fmnist.safetensors --teacher-images 162000 \\
        --img-size 64 --rules maxpool dw-hybrid                        # a pretrained teacher of your own
    python benchmarks/recovery.py --quick --data tests/data/fashion-mnist   # a smoke run (about a minute)

Writes OUT/results.json and OUT/results.md (with ``--write-docs`` also docs/results/recovery.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import pfconvert
from pfconvert.recover.finetune import FinetuneConfig, TextReporter, family_defaults
from pfconvert.recover.finetune.start import FinetuneStart
from pfconvert.recover.finetune.start_file import start_settings

try:
    from ._results import add_docs_flag, write_page  # imported as benchmarks.recovery (tests, python -m)
except ImportError:
    from _results import add_docs_flag, write_page  # run as a script: its directory is sys.path[0]

SWEEP = (1e-3, 3e-4, 1e-4, 3e-5)
"""The manual learning rates the default is compared with (issue 27)."""
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist" / "run.py"


@dataclass(frozen=True)
class Teacher:
    """The original model of a case: timm name, weights, input size, and the training images it was trained on."""

    model: str
    weights: Path
    img_size: int
    train_images: int
    label: str
    kwargs: dict[str, Any]
    test_top1: float | None = None


def _example() -> Any:
    """examples/fashion_mnist/run.py as a module (its pipelines and its teacher training)."""
    spec = importlib.util.spec_from_file_location("fashion_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def scratch_teacher(args: argparse.Namespace) -> Teacher:
    """Train (or reuse) the example's from-scratch original of ``args.model``."""
    example = _example()
    pipe = example.PIPELINES.get(args.model) or example.Pipeline(args.model, tuple(args.rules), args.img_size or 32)
    if args.img_size:
        pipe = replace(pipe, img_size=args.img_size)
    budget = example.Budget(args.teacher_train_images, args.teacher_epochs, 1, args.val_images, args.test_images)
    out = args.out / "teacher" / pipe.model
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "original-run" / "finetune.json"
    unfinished = summary.is_file() and json.loads(summary.read_text()).get("status") != "completed"
    weights, run, fresh = example.train_original(pipe, args.data, budget, out, retrain=unfinished)
    if run.get("status") != "completed":
        raise SystemExit(f"the teacher's training ended {run.get('status')}, not completed; run again")
    print(f"teacher {pipe.model}: {'trained' if fresh else 'reused'} ({weights})", file=sys.stderr)
    return Teacher(pipe.model, weights, pipe.img_size, args.teacher_train_images * args.teacher_epochs,
                   f"{pipe.model} trained from scratch ({args.teacher_epochs} x {args.teacher_train_images} images)",
                   dict(pipe.kwargs))


def given_teacher(args: argparse.Namespace) -> Teacher:
    """``--teacher NAME=WEIGHTS``."""
    name, _, weights = args.teacher.partition("=")
    if not weights or not Path(weights).is_file():
        raise SystemExit(f"--teacher {args.teacher!r}: expected NAME=WEIGHTS.safetensors with an existing file")
    if not args.teacher_images:
        raise SystemExit("--teacher needs --teacher-images N, the images it was trained on (the budgets' base)")
    path = Path(weights)
    return Teacher(name, path, args.img_size or 224, args.teacher_images, f"{name} ({path.parent.name}/{path.name})",
                   {})


def convert(teacher: Teacher, rule: str, out: Path, data: str, args: argparse.Namespace) -> tuple[Path, float]:
    """Convert the teacher with ``rule`` into ``out``; returns the artifact and the teacher's test top-1 (with
    ``--reuse``, an earlier call's conversion and score are kept)."""
    scored = out / "teacher_test.json"
    if args.reuse and (out / "recipe.json").is_file() and scored.is_file():
        return out, json.loads(scored.read_text())["top1"]
    size = (3, teacher.img_size, teacher.img_size)
    torch.manual_seed(0)
    model, record = pfconvert.convert(teacher.model, rule, checkpoint=teacher.weights, input_size=size,
                                      num_classes=args.num_classes, **teacher.kwargs)
    art = pfconvert.save(model, record, out, overwrite=True)
    report = pfconvert.evaluate_artifact(art, data, split="test", original=True, limit=args.test_images,
                                         workers=args.workers, img_size=teacher.img_size)
    top1 = report.metrics["original"].top1
    scored.write_text(json.dumps({"top1": top1}))
    return art, top1


def _row(summary: dict[str, Any], test: Any, share: float, lr: float | None, images: int,
         seconds: float | None) -> dict[str, Any]:
    """A results row from a run's ``finetune.json`` and its test-split metrics."""
    start = FinetuneStart.from_dict(summary.get("start")).student()
    best = summary.get("best") or {}
    choice = summary.get("lr_choice") or {}
    return {
        "recipe": "default" if lr is None else f"lr {lr:.0e}", "budget_share": share, "train_images": images,
        "lr": summary.get("lr"), "lr_method": choice.get("method"), "lr_probe": choice.get("candidates"),
        "lr_probe_images": choice.get("train_images", 0), "start_state": start[0] if start else None,
        "start_val_top1": start[1].top1 if start else None, "val_top1": best.get("val_top1"),
        "best_point": best.get("step", 0) if best.get("epoch") else 0, "test_top1": test.top1,
        "test_images": test.count, "seconds": seconds, "train_seconds": round(summary.get("train_seconds", 0), 1),
    }


def _shared_start(runs: Path, config: FinetuneConfig) -> Path | None:
    """The ``start.pt`` of a finished run in ``runs`` whose start settings are ``config``'s (another learning rate or
    budget): the fine-tune reads it instead of computing the same start again (it checks the weights and data too)."""
    mine = start_settings(config.model_dump())
    for summary in sorted(runs.glob("*/finetune.json")):
        kept = summary.parent / "checkpoints" / "start.pt"
        if kept.is_file() and mine == start_settings(json.loads(summary.read_text()).get("config", {})):
            return kept
    return None


def finetune(base: Path, out: Path, teacher: Teacher, share: float, lr: float | None,
             args: argparse.Namespace) -> dict[str, Any]:
    """One fine-tune of a copy of the converted artifact ``base``: the defaults of ``pfconvert finetune`` (the
    family's recipe, the probe's learning rate) or ``lr``; returns a results row (kept in ``out/row.json``: with
    ``--reuse`` a finished run is not run again; a finished run without its row is scored again on the test split)."""
    images = max(1, round(share * teacher.train_images))
    cached, summary_file = out / "row.json", out / "finetune.json"
    if args.reuse and cached.is_file():
        return json.loads(cached.read_text())
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    done = (args.reuse and summary.get("status") == "completed" and summary.get("config", {}).get("train_images")
            == images and summary.get("config", {}).get("lr") == lr)
    started = time.perf_counter()
    if not done:
        shutil.rmtree(out, ignore_errors=True)
        art = Path(shutil.copytree(base, out))
        _, defaults = family_defaults(art, images)
        values: dict[str, Any] = {**defaults, "data": args.data, "img_size": teacher.img_size, "train_images": images,
                                  "limit_val": args.val_images, "workers": args.workers, "seed": args.seed}
        if args.batch_size:
            values["batch_size"] = args.batch_size
        if args.quick:
            values.update(reconstruct_images=min(values.get("reconstruct_images", 0), 32), bn_recalib_images=32,
                          lr_probe_images=32, block_steps=min(values.get("block_steps", 0), 20))
        if lr is not None:
            values["lr"] = lr
        config = FinetuneConfig(**values)
        shared = _shared_start(out.parent, config)
        if shared is not None:
            (art / "checkpoints").mkdir(exist_ok=True)
            shutil.copyfile(shared, art / "checkpoints" / "start.pt")
        pfconvert.finetune(art, config, overwrite=True, reporter=TextReporter(quiet=not args.verbose))
        summary = json.loads(summary_file.read_text())
    seconds = round(time.perf_counter() - started, 1) if not done else None
    test = pfconvert.evaluate_artifact(out, args.data, split="test", limit=args.test_images, workers=args.workers,
                                       img_size=teacher.img_size).metrics["student"]
    row = _row(summary, test, share, lr, images, seconds)
    cached.write_text(json.dumps(row, indent=2))
    return row


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(cases: list[dict[str, Any]]) -> str:
    """The tables: per case, each recipe and budget; then the default against the best of the sweep."""
    lines = ["| teacher | rule | px | budget (images) | recipe | learning rate | start (val) | val top-1 | "
             "test top-1 | vs teacher (test) |", "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for case in cases:
        for row in case["rows"]:
            lr = f"{row['lr']:.0e}" + (" (probe)" if row["lr_method"] == "probe" else "")
            lines.append(f"| {case['teacher']} | {case['rule']} | {case['img_size']} | {row['budget_share']:.0%} "
                         f"({row['train_images']}) | {row['recipe']} | {lr} | {_fmt(row['start_val_top1'])} | "
                         f"{_fmt(row['val_top1'])} | {_fmt(row['test_top1'])} | "
                         f"{row['test_top1'] - case['teacher_test_top1']:+.2f} |")
        first = min(r["budget_share"] for r in case["rows"])
        same = [r for r in case["rows"] if r["budget_share"] == first]
        auto = next((r for r in same if r["recipe"] == "default"), None)
        sweep = [r for r in same if r["recipe"] != "default"]
        if auto is not None and sweep:
            top = max(sweep, key=lambda r: r["test_top1"])
            verdicts.append(
                f"- {case['teacher']}, {case['rule']} at {first:.0%}: the default ({auto['lr']:.0e}) "
                f"{auto['test_top1']:.2f} test vs the sweep's best ({top['recipe']}) {top['test_top1']:.2f}: "
                f"{auto['test_top1'] - top['test_top1']:+.2f} points; start {_fmt(auto['start_val_top1'])} val, "
                f"default best {_fmt(auto['val_top1'])} val")
    curve = ["| teacher | rule | px | teacher test top-1 | budget (images) | learning rate | test top-1 | vs teacher |",
             "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        defaults = sorted((r for r in case["rows"] if r["recipe"] == "default"), key=lambda r: r["budget_share"])
        if len(defaults) > 1:
            curve += [f"| {case['teacher']} | {case['rule']} | {case['img_size']} | {case['teacher_test_top1']:.2f} | "
                      f"{r['budget_share']:.0%} ({r['train_images']}) | {r['lr']:.0e} (probe) | {r['test_top1']:.2f} "
                      f"| {r['test_top1'] - case['teacher_test_top1']:+.2f} |" for r in defaults]
    out = lines + ["", "Default against the best of the manual sweep at the same budget:", "", *verdicts]
    if len(curve) > 2:
        out += ["", "Budget curve: the default fine-tune at budgets given as shares of the teacher's training images:",
                "", *curve]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist", help="dataset (default: fashion-mnist)")
    parser.add_argument("--out", type=Path, default=Path("runs/recovery"))
    parser.add_argument("--model", default="mobilenetv2_050", help="the from-scratch teacher's example pipeline")
    parser.add_argument("--teacher", default=None, help="NAME=WEIGHTS.safetensors: a timm model and its checkpoint "
                        "instead of the from-scratch teacher")
    parser.add_argument("--teacher-images", type=int, default=None,
                        help="with --teacher: training images it was trained on (the budgets are shares of them)")
    parser.add_argument("--teacher-train-images", type=int, default=12000, help="from scratch: images per epoch")
    parser.add_argument("--teacher-epochs", type=int, default=10, help="from scratch: epochs")
    parser.add_argument("--img-size", type=int, default=None, help="input size (default: the pipeline's; 224 with "
                        "--teacher)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--rules", nargs="*", default=["maxpool"], help="rules (names or files); the first gets the "
                        "budget curve")
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.3, 1.0, 3.0],
                        help="fine-tune images as shares of the teacher's (the first: the recipe comparison)")
    parser.add_argument("--sweep", type=float, nargs="*", default=list(SWEEP), help="manual learning rates")
    parser.add_argument("--batch-size", type=int, default=None, help="fine-tune batch (default: the command's)")
    parser.add_argument("--val-images", type=int, default=None, help="default: the whole validation split")
    parser.add_argument("--test-images", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="keep the runs an earlier call finished in OUT (each "
                        "run's row.json, or its finetune.json scored again on the test split); without it every "
                        "run starts afresh")
    parser.add_argument("--with-results", type=Path, nargs="*", default=[], metavar="OUT",
                        help="other runs' OUT folders: their cases (results.json) join this run's table and page")
    parser.add_argument("--note", default="", help="a sentence for the page (what was not run, the load)")
    parser.add_argument("--verbose", action="store_true", help="the fine-tunes' progress lines")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, a few hundred images, the default "
                        "and 1e-3 at 30%%, the default at 100%%")
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.img_size = args.img_size or 32
        args.teacher_train_images, args.teacher_epochs = 256, 1
        args.val_images, args.test_images, args.batch_size = 32, 64, args.batch_size or 32
        args.budgets, args.sweep, args.workers = args.budgets[:2], [1e-3], 0
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teacher = given_teacher(args) if args.teacher else scratch_teacher(args)
    cases = []
    for index, rule in enumerate(args.rules):
        name = Path(rule).stem if Path(rule).suffix in (".yaml", ".yml") else rule
        root = args.out / teacher.model / name
        base, teacher_top1 = convert(teacher, rule, root / "converted", args.data, args)
        case = {"teacher": teacher.label, "model": teacher.model, "rule": name, "img_size": teacher.img_size,
                "teacher_test_top1": teacher_top1, "teacher_train_images": teacher.train_images, "rows": []}
        runs = [(args.budgets[0], None), *((args.budgets[0], lr) for lr in args.sweep)]
        runs += [(share, None) for share in args.budgets[1:]] if index == 0 else []
        for share, lr in runs:
            tag = f"{share:g}x-" + ("default" if lr is None else f"lr{lr:.0e}")
            row = finetune(base, root / tag, teacher, share, lr, args)
            case["rows"].append(row)
            print(f"[{time.perf_counter() - started:.0f} s] {teacher.model} {name} {tag}: lr {row['lr']:.0e}, "
                  f"val {_fmt(row['val_top1'])}, test {row['test_top1']:.2f}", file=sys.stderr)
        cases.append(case)
        (args.out / "results.json").write_text(json.dumps(cases, indent=2))
    for extra in args.with_results:
        cases += json.loads((extra / "results.json").read_text())
    table = markdown(cases)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    if args.write_docs:
        from pfconvert.report import describe_machine

        runs = [r for case in cases for r in case["rows"]]
        spent = sum(r.get("seconds") or 0 for r in runs)
        took = time.perf_counter() - started
        notes = (f"This call: {took:.0f} s; the runs' own wall time (conversion start, probe, "
                 f"training, validation; on a machine shared with other jobs): {spent:.0f} s over {len(runs)} runs "
                 "(runs kept from an earlier call without a recorded time count 0; a run whose start settings equal "
                 "an earlier run's reads that start, checkpoints/start.pt, instead of computing it again, so its time "
                 f"leaves the reconstruction out). {args.note} Test top-1 on "
                 f"{cases[0]['rows'][0]['test_images']} test images; 'start (val)': the student after reconstruction "
                 "and BatchNorm re-estimation; "
                 "'val top-1': the best validation point (the exported weights); the probe's images are not counted "
                 "in the budget (finetune.json: lr_choice).")
        write_page("recovery", "Recovery after conversion: default fine-tune vs a learning-rate sweep, and budgets",
                   table, describe_machine(), notes)
    return cases


if __name__ == "__main__":
    main()
