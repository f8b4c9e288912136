"""pfconvert against structured pruning (Torch-Pruning), side by side: params, MACs, CPU latency, and accuracy.

The peer a user would pick instead of a parameter-free redesign is structured channel pruning: Torch-Pruning's
magnitude pruner ("Towards Any Structural Pruning", PyPI ``torch-pruning``, an optional benchmark dependency:
``pip install 'pfconvert[bench]'``), one uniform ratio for every layer but the classifier. For each model and
pfconvert rule this benchmark builds two pruned peers of the original:

- ``pruned@MACs``: the ratio whose MACs match the conversion's (bisection on the ratio, within 0.5%);
- ``pruned@latency``: the ratio whose latency matches the conversion's on the deployed CPU path (the ``cpu`` backend,
  batch 1), fitted to one interleaved timing of a grid of ratios (:func:`match_latency`);

then times the original, the conversions and the peers side by side in one run on every CPU backend (224 px, random
weights: speed does not depend on them).

Accuracy (Fashion-MNIST, the protocol of ``examples/fashion_mnist/run.py``; ``--accuracy-models``): for each pipeline
(``resnet26`` at 32 px, ``mobilenetv2_050`` at 64 px), every student starts from the same trained original
(``OUT/MODEL/original.safetensors``, 10 epochs x 12000 images; train it with that example) and gets the same
fine-tune, distillation from the original budgeted at 30% of the original's training compute; choices on the
validation split, figures on the 10k test images. The students: the conversions (resnet26: ``r50-max``,
``r50-hybrid``; mobilenetv2_050: ``dw-hybrid`` and the rule ``pfconvert plan`` chose for it), the pruned peers at
equal MACs and at equal latency (latency matched at the pipeline's size, batch 1, deployed CPU path; on the ResNet
cases ``r50-max`` also gets one of equal ONNX Runtime latency, ``pruned@ORT-latency``), and for the ResNet cases
the composition ``r50-hybrid+prune``: convert with r50-hybrid, refit the layers after the pools by least-squares (as
the conversions' fine-tune does), prune its remaining convs to the latency of ``r50-max``, then fine-tune the same
way. ``resnet50`` (``--accuracy-models resnet50``, same students as resnet26) is not in the default: its original
and students take about 1.5 hours more on 2 CPU cores (train the original with the example's ``--models resnet50
--rules``).

Usage::

    python benchmarks/peers.py --write-docs                          # everything (about an hour on 2 cores)
    python benchmarks/peers.py --models resnet26 --skip-accuracy --size 64 --runs 3 --batch-sizes 1
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import pfconvert
from pfconvert.conversion.models import create_model
from pfconvert.report.backends import backend_label, default_backends
from pfconvert.report.counting import count_macs
from pfconvert.report.latency import LatencyConfig, measure, median_ms
from pfconvert.report.machine import describe_machine, machine_info

try:
    from ._results import add_docs_flag, int_list, write_page  # imported as benchmarks.peers (tests, python -m)
except ImportError:
    from _results import add_docs_flag, int_list, write_page  # run as a script: its directory is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
CASES = {"resnet26": ["r50-max", "r50-hybrid"], "resnet50": ["r50-max", "r50-hybrid"],
         "mobilenetv2_050": ["dw-hybrid"]}
MAC_TOLERANCE = 0.005


@dataclass(frozen=True)
class AccuracyCase:
    """The students of one Fashion-MNIST pipeline of examples/fashion_mnist/run.py: its conversions (table label ->
    built-in rule name or rule file), each with its pruned peers, and optionally the composition ``(convert, target)``:
    convert with the first, prune to the latency of the second."""

    rules: dict[str, str]
    compose: tuple[str, str] | None = None
    ort_match: tuple[str, ...] = ()  # conversions that also get a pruned peer of equal latency on ONNX Runtime

    def composition(self) -> str | None:
        return f"{self.compose[0]}+prune@latency({self.compose[1]})" if self.compose else None

    def order(self) -> list[str]:
        """Table order: the original, then each conversion followed by its peers (the composition after the peers of
        the conversion whose latency it matches)."""
        names = ["original"]
        for label in self.rules:
            names += [label, f"pruned@latency({label})", f"pruned@MACs({label})"]
            if label in self.ort_match:
                names.append(f"pruned@ORT-latency({label})")
            if self.compose and self.compose[1] == label:
                names.append(self.composition())  # type: ignore[arg-type]
        return names


PLANNED_RULES = ROOT / "examples" / "fashion_mnist" / "rules"
# r50-max also against a peer of its ONNX Runtime latency: there the conversion is fastest, and pruned channel counts
# run slower than their MACs (a peer of equal ORT latency is pruned harder than the one of equal MACs)
RESNET_CASE = AccuracyCase({"r50-max": "r50-max", "r50-hybrid": "r50-hybrid"}, compose=("r50-hybrid", "r50-max"),
                           ort_match=("r50-max",))
ACCURACY_CASES: dict[str, AccuracyCase] = {
    "resnet26": RESNET_CASE,
    # not in the default --accuracy-models: its original and students take about 1.5 hours on 2 CPU cores
    "resnet50": RESNET_CASE,
    # the depthwise net: the family's hybrid rule, and the conversion `pfconvert plan` chose for this original
    "mobilenetv2_050": AccuracyCase({"dw-hybrid": "dw-hybrid",
                                     "maxpool-planned": str(PLANNED_RULES / "mobilenetv2_050-planned.yaml")}),
}


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise SystemExit("benchmarks/peers.py needs Torch-Pruning: pip install torch-pruning (or 'pfconvert[bench]')")
    return torch_pruning


# -- pruning -----------------------------------------------------------------------------------------------------------


def classifier(model: nn.Module) -> nn.Module:
    """The model's classifier (kept whole: its outputs are the classes)."""
    return model.get_classifier() if hasattr(model, "get_classifier") else list(model.modules())[-1]


def prune(model: nn.Module, ratio: float, size: tuple[int, int, int]) -> nn.Module:
    """A pruned copy of ``model``: Torch-Pruning's magnitude pruner (L1 norm of each channel's weights), one uniform
    ``ratio`` of the output channels of every layer but the classifier (coupled channels, such as a residual stage's,
    pruned together). Parameter-free ops (max/avg pools) pass channels through, so a converted model prunes too."""
    tp = _torch_pruning()
    pruned = copy.deepcopy(model).eval()
    if ratio <= 0:
        return pruned
    example = torch.randn(1, *size)
    pruner = tp.pruner.MagnitudePruner(pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=[classifier(pruned)])
    pruner.step()
    with torch.no_grad():
        pruned(example)  # the shapes fit
    return pruned


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def match_macs(model: nn.Module, target: int, size: tuple[int, int, int], hi: float = 0.9,
               steps: int = 14) -> tuple[float, nn.Module]:
    """The uniform ratio whose pruned MACs match ``target`` (bisection; MACs fall as the ratio grows)."""
    lo, best = 0.0, (float("inf"), 0.0, model)
    for _ in range(steps):
        mid = (lo + hi) / 2
        pruned = prune(model, mid, size)
        macs = count_macs(pruned, size).macs
        if abs(macs / target - 1) < best[0]:
            best = (abs(macs / target - 1), mid, pruned)
        if best[0] < MAC_TOLERANCE / 4:
            break
        lo, hi = (mid, hi) if macs > target else (lo, mid)
    return best[1], best[2]


def latency_ratios(candidates: dict[str, nn.Module], target: nn.Module, config: LatencyConfig,
                   backend: str = "cpu") -> dict[str, float]:
    """Median latency of each candidate / ``target``'s on ``backend`` (default: the deployed CPU path), all timed
    interleaved."""
    times = measure({"target": target, **candidates}, [backend], config)
    cell = times[(backend, config.batch_sizes[0])]
    return {key: median_ms(cell[key]) / median_ms(cell["target"]) for key in candidates}


def match_latency(model: nn.Module, target: nn.Module, size: tuple[int, int, int], start: float, config: LatencyConfig,
                  points: int = 6, span: float = 0.2, log: Callable[[str], None] = _log, backend: str = "cpu",
                  tolerance: float = 0.03, refine: int = 3) -> tuple[float, nn.Module, float]:
    """The uniform ratio whose pruned latency matches ``target``'s on ``backend`` (default: the deployed CPU path) at
    batch 1.

    A grid of ``points`` ratios around ``start`` (the ratio at equal MACs, +-``span``) is timed together with the
    target in one interleaved measurement; ``rel = a + b (1 - ratio)^2`` (latency roughly follows MACs, which fall
    with the square of the kept channels) is fitted by least squares and solved for ``rel = 1`` (clipped to the
    grid), which averages the noise of single timings out. The chosen ratio is then timed against the target once
    more. Where that is off by more than ``tolerance`` (latency that jumps with the channel counts, as on ONNX
    Runtime), up to ``refine`` steps of regula falsi follow: interpolate linearly between the last ratio and the
    nearest timed one on the other side of the target, time it. Returns the ratio timed closest to the target's
    latency, the pruned model and its measured latency ratio (1.0 = matched).
    """
    lo, hi = max(0.0, start - span), min(0.85, start + span)
    grid = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    rel = latency_ratios({f"{r:.4f}": prune(model, r, size) for r in grid}, target, config, backend)
    log("  latency / target's: " + ", ".join(f"ratio {k}: {v:.3f}" for k, v in rel.items()))
    xs = torch.tensor([(1 - r) ** 2 for r in grid], dtype=torch.float64)
    ys = torch.tensor(list(rel.values()), dtype=torch.float64)
    a = torch.stack([torch.ones_like(xs), xs], 1)
    coef = torch.linalg.lstsq(a, ys[:, None]).solution[:, 0]
    b0, b1 = float(coef[0]), float(coef[1])
    if b1 > 0:
        kept2 = (1.0 - b0) / b1
        ratio = 1 - max(kept2, 0.0) ** 0.5
    else:  # no trend measured: the grid point closest to the target
        ratio = float(grid[int((ys - 1).abs().argmin())])
    ratio = min(max(ratio, lo), hi)
    pruned = prune(model, ratio, size)
    check = latency_ratios({"chosen": pruned}, target, config, backend)["chosen"]
    log(f"  fit: ratio {ratio:.3f}, measured again: {check:.3f}x the target's latency")
    timed = {**dict(zip(grid, ys.tolist())), ratio: check}
    for _ in range(refine):
        if abs(check - 1) <= tolerance:
            break
        if check > 1:  # too slow: towards the nearest harder-pruned ratio timed faster than the target
            other = min((r for r, v in timed.items() if r > ratio and v < 1), default=None)
        else:
            other = max((r for r, v in timed.items() if r < ratio and v > 1), default=None)
        if other is None:
            break
        ratio = ratio + (1 - check) * (other - ratio) / (timed[other] - check)
        pruned = prune(model, ratio, size)
        check = timed[ratio] = latency_ratios({"chosen": pruned}, target, config, backend)["chosen"]
        log(f"  refined: ratio {ratio:.3f}, measured: {check:.3f}x the target's latency")
    best = min(timed, key=lambda r: abs(timed[r] - 1))  # a step in the latency can leave the last try further off
    if best != ratio:
        ratio, pruned, check = best, prune(model, best, size), timed[best]
        log(f"  closest timed: ratio {ratio:.3f}, {check:.3f}x the target's latency")
    return ratio, pruned, check


# -- speed (224 px) ----------------------------------------------------------------------------------------------------


def build_speed_models(name: str, rules: list[str], size: tuple[int, int, int], args: argparse.Namespace,
                       ) -> tuple[dict[str, nn.Module], dict[str, float | None]]:
    """The original, each conversion, and its pruned peers at equal MACs and at equal latency."""
    original = create_model(name).eval()
    models: dict[str, nn.Module] = {"original": original}
    ratios: dict[str, float | None] = {"original": None}
    match = LatencyConfig(batch_sizes=(1,), input_size=size, runs=args.match_runs, warmup=2, threads=args.threads,
                          max_seconds=args.max_seconds / 2, deploy_method=args.deploy)
    for rule in rules:
        converted, _ = pfconvert.convert(original, rule, input_size=size)
        models[rule], ratios[rule] = converted.eval(), None
        ratio, pruned = match_macs(original, count_macs(converted, size).macs, size)
        models[f"pruned@MACs({rule})"], ratios[f"pruned@MACs({rule})"] = pruned, ratio
        _log(f"{name}: {rule} MACs matched at ratio {ratio:.3f}; matching its latency (cpu, batch 1)")
        if not args.skip_latency_match:
            lat_ratio, lat_pruned, rel = match_latency(original, converted, size, ratio, match)
            models[f"pruned@latency({rule})"], ratios[f"pruned@latency({rule})"] = lat_pruned, lat_ratio
    return models, ratios


def run_speed(args: argparse.Namespace) -> list[dict]:
    """One row per model variant, with params, MACs and latency per backend and batch size."""
    size = (3, args.size, args.size)
    config = LatencyConfig(batch_sizes=tuple(args.batch_sizes), input_size=size, runs=args.runs, warmup=args.warmup,
                           threads=args.threads, max_seconds=args.max_seconds, deploy_method=args.deploy)
    saved = args.out / "speed.json"  # rows of each model as it is done, so a run that stops keeps the finished ones
    done = json.loads(saved.read_text()) if args.reuse_speed and saved.is_file() else []
    rows = [r for r in done if r["model"] in args.models and r["px"] == args.size]
    for name in args.models:
        if any(r["model"] == name for r in rows):
            _log(f"{name}: reusing the rows of an earlier run ({saved})")
            continue
        _log(f"building {name} + {', '.join(CASES[name])} and the pruned peers")
        models, ratios = build_speed_models(name, CASES[name], size, args)
        timings = measure(models, args.backends, config, progress=lambda t, n=name: _log(f"{n}: timing {t}"))
        for key, model in models.items():
            cells = {}
            for (backend, bs), times in timings.items():
                ms, base = median_ms(times[key]), median_ms(times["original"])
                cells[f"{backend_label(backend, config.deploy_method)} bs{bs}"] = [round(ms, 3), round(base / ms, 3)]
            rows.append({"model": name, "variant": key, "ratio": ratios[key], "params": params(model),
                         "macs": count_macs(model, size).macs, "px": args.size, "latency": cells})
        args.out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(rows, indent=2))
    return rows


def speed_markdown(rows: list[dict]) -> str:
    cells = list(rows[0]["latency"]) if rows else []
    out = ["| model | variant | prune ratio | params | GMACs | MACs vs conversion | "
           + " | ".join(f"{c}: ms (speed-up)" for c in cells) + " |",
           "|---|---|---:|---:|---:|---:|" + "---:|" * len(cells)]
    macs_of = {(r["model"], r["variant"]): r["macs"] for r in rows}
    for r in rows:
        rule = r["variant"].split("(")[-1].rstrip(")") if "(" in r["variant"] else None
        vs = f"{r['macs'] / macs_of[(r['model'], rule)] - 1:+.1%}" if rule else ""
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else ""
        out.append(f"| {r['model']} | {r['variant']} | {ratio} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.3f} | "
                   f"{vs} | " + " | ".join(f"{ms:.2f} ({s:.2f}x)" for ms, s in r["latency"].values()) + " |")
    px = rows[0]["px"] if rows else 224
    out += ["", f"{px} px input, random weights. Median of interleaved rounds after warm-up (original, conversions and "
            "peers timed together in each cell); speed-up = original / variant latency. pruned@MACs(rule): "
            "Torch-Pruning magnitude pruner, uniform ratio matched to the conversion's MACs; pruned@latency(rule): "
            "ratio matched to the conversion's measured latency on the deployed CPU path at batch 1 (fitted to one "
            "interleaved timing of a grid of ratios, so the match is as good as this machine's noise). GMACs: fvcore "
            "convention (1 multiply-add = 1, pooling not counted)."]
    return "\n".join(out) + "\n"


# -- accuracy (Fashion-MNIST pipelines) --------------------------------------------------------------------------------


def _example() -> Any:
    """examples/fashion_mnist/run.py as a module: its pipelines, budget and fine-tune recipe."""
    spec = importlib.util.spec_from_file_location("fm_example", ROOT / "examples" / "fashion_mnist" / "run.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["fm_example"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _test_top1(model: nn.Module, data: str, data_cfg: Any, limit: int | None) -> float:
    """Top-1 of a plain module on the test split, fed as in its fine-tune (pfconvert's own evaluation loop)."""
    from pfconvert.data.datasets import open_split, resolve_source
    from pfconvert.data.loaders import eval_loader
    from pfconvert.data.transforms import build_transforms
    from pfconvert.recover.dist import setup, teardown
    from pfconvert.recover.metrics import evaluate
    from pfconvert.recover.precision import resolve_precision

    ctx = setup("cpu")
    try:
        dataset = open_split(resolve_source(data), "test", limit, 0)
        dataset.mode = data_cfg.image_mode
        cfg, _ = data_cfg.for_images(dataset.image_size())
        dataset.transform = build_transforms(cfg, "none")[1]
        loader = eval_loader(dataset, 128, 1, ctx.rank, ctx.world_size, False)
        return evaluate(model, loader, resolve_precision(ctx.device), ctx).top1
    finally:
        teardown(ctx)


class Accuracy:
    """The students of one pipeline (``model``), each fine-tuned once by the example's protocol; results cached under
    OUT/MODEL."""

    def __init__(self, args: argparse.Namespace, model: str) -> None:
        self.ex = _example()
        self.args = args
        self.model = model
        self.case = ACCURACY_CASES[model]
        self.pipe = self.ex.PIPELINES[model]
        self.size = (3, self.pipe.img_size, self.pipe.img_size)
        self.out = args.out / model
        self.weights = self.out / "original.safetensors"
        if not self.weights.is_file():
            raise SystemExit(f"{self.weights} is missing: train it with examples/fashion_mnist/run.py --models "
                             f"{model} and copy OUT/{model}/original.safetensors here")
        b = args.finetune_budget
        self.budget = self.ex.Budget(b["train_images"], b["train_epochs"], 3, b.get("val_images"), args.test_images,
                                     b.get("calib_images", 1024))
        self.original = self.load_original()
        from pfconvert.data import resolve_data_config

        self.data_cfg = resolve_data_config(self.original, input_size=self.size)
        self.macs_original = count_macs(self.original, self.size).macs
        self.latency = LatencyConfig(batch_sizes=(1,), input_size=self.size, runs=args.match_runs_32, warmup=5,
                                     threads=args.threads, max_seconds=8, deploy_method=args.deploy)

    def load_original(self) -> nn.Module:
        return create_model(self.model, checkpoint=self.weights, num_classes=10).eval()

    def recipe(self, images: int, reconstruct: int) -> Any:
        b, p = self.budget, self.pipe
        return self.ex.config(self.args.data, b, p, b.finetune_epochs, lr=p.finetune_lr, limit_train=images,
                              reconstruct_images=reconstruct, bn_recalib_images=b.calib_images,
                              batch_size=p.finetune_batch_size, freeze_bn=p.freeze_bn, eval_teacher=False,
                              augment=self.ex.FINETUNE_AUGMENT)

    def _cached(self, name: str) -> dict | None:
        path = self.out / name / "peers.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def converted(self, label: str) -> tuple[nn.Module, Any]:
        """The original converted with the case's rule ``label``, and its conversion record."""
        return pfconvert.convert(self.model, self.case.rules[label], checkpoint=self.weights, input_size=self.size,
                                 num_classes=10)

    def convert(self, label: str) -> nn.Module:
        return self.converted(label)[0].eval()

    def conversion(self, rule: str) -> dict:
        """A conversion fine-tuned as the example does (an artifact already fine-tuned by the example is reused)."""
        art = self.out / rule
        summary = art / "finetune.json"
        if not summary.is_file():
            model, record = self.converted(rule)
            art = pfconvert.save(model, record, art, overwrite=True)
            images = self._images(model, refits=True)
            _log(f"fine-tuning {rule} on {images} images per epoch")
            pfconvert.finetune(art, self.recipe(images, self.budget.calib_images), overwrite=True)
        ft = json.loads(summary.read_text())
        test = pfconvert.evaluate_artifact(art, self.args.data, split="test", limit=self.args.test_images, workers=1)
        student = pfconvert.load(art).eval()
        row = {"name": rule, "kind": "pfconvert", "ratio": None, "params": params(student),
               "macs": count_macs(student, self.size).macs, "images": ft["config"]["limit_train"],
               "start_val_top1": (ft["start"].get("recalibrated") or ft["start"].get("reconstructed")
                                  or ft["start"]["converted"])["top1"],
               "val_top1": ft["best"]["val_top1"], "test_top1": test.metrics["student"].top1,
               "train_seconds": round(ft["train_seconds"])}
        (art / "peers.json").write_text(json.dumps(row, indent=2))
        return row

    def _images(self, student: nn.Module, refits: bool, converted: nn.Module | None = None) -> int:
        """Training images per epoch within the budget (the reconstruction passes charged as the example does)."""
        macs = count_macs(student, self.size).macs
        shares: list[tuple[float, float]] = []
        if refits:
            from pfconvert.recover import find_consumers

            conv = converted if converted is not None else student
            paths = list(find_consumers(conv, self.original, self.size))
            shares = list(zip(self.ex.forward_shares(conv, self.size, paths),
                              self.ex.forward_shares(self.original, self.size, paths)))
        return self.ex.finetune_images(self.budget, self.macs_original, macs, shares,
                                       minimum=self.pipe.finetune_batch_size)[0]

    def pruned(self, name: str, base: nn.Module, ratio: float, kind: str, reconstructed_from: str | None = None,
               ) -> dict:
        """Prune ``base`` at ``ratio`` and fine-tune it by distillation from the original, the example's recipe."""
        from pfconvert.conversion import save_weights
        from pfconvert.recover.finetune.runner import run_finetune

        out = self.out / name
        student = prune(base, ratio, self.size)
        if reconstructed_from is not None:  # the composition: charge the reconstruction of the conversion it came from
            images = self._images(student, refits=True, converted=base)
        else:
            images = self._images(student, refits=False)
        _log(f"fine-tuning {name} (ratio {ratio:.3f}, {count_macs(student, self.size).macs / 1e6:.1f}M MACs) on "
             f"{images} images per epoch")
        best = out / "finetuned.safetensors"
        torch.manual_seed(0)
        result = run_finetune(student, self.load_original(), self.recipe(images, 0), out, data_cfg=self.data_cfg,
                              overwrite=True, export=lambda m, _d: (save_weights(m, best), best)[1])
        ft = result.to_dict()
        from safetensors.torch import load_file

        student.load_state_dict(load_file(str(best)))
        row = {"name": name, "kind": kind, "ratio": ratio, "params": params(student),
               "macs": count_macs(student, self.size).macs, "images": images,
               "start_val_top1": (ft["start"].get("recalibrated") or ft["start"]["converted"])["top1"],
               "val_top1": ft["best"]["val_top1"],
               "test_top1": _test_top1(student.eval(), self.args.data, self.data_cfg, self.args.test_images),
               "train_seconds": round(ft["train_seconds"])}
        (out / "peers.json").write_text(json.dumps(row, indent=2))
        return row

    def reconstructed(self, rule: str) -> nn.Module:
        """The conversion with the layers after its pools refit by least-squares on the fine-tune's calibration
        images (what the conversions' fine-tune does before training), ready to be pruned."""
        from pfconvert.recover.finetune.loaders import prepare_data, recalibration_loader
        from pfconvert.recover.refit import reconstruct

        converted = self.convert(rule)
        config = self.recipe(self.budget.train_images, self.budget.calib_images)
        bundle = prepare_data(config, self.data_cfg, 10)
        loader = recalibration_loader(bundle, config, count=config.reconstruct_images)
        reconstruct(converted, self.original, [x for x, _ in loader], input_size=self.size)
        return converted.eval()

    def matched(self, key: str, base: nn.Module, target: nn.Module, backend: str = "cpu",
                ) -> tuple[float, float, float]:
        """Ratios matching ``target``'s MACs and its latency at the pipeline's size on ``backend`` (default: the
        deployed CPU path) when pruning ``base`` (cached in OUT/ratios.json)."""
        path = self.out / "ratios.json"
        cache = json.loads(path.read_text()) if path.is_file() else {}
        if backend != "cpu":
            key = f"{key}@{backend}"
        if key not in cache:
            mac_ratio, _ = match_macs(base, count_macs(target, self.size).macs, self.size)
            _log(f"{key}: MACs matched at ratio {mac_ratio:.3f}; matching the latency at {self.size[-1]} px on "
                 f"{backend}")
            # off the deployed path the equal-latency ratio can sit further from the MACs match: a wider grid
            lat_ratio, _, rel = match_latency(base, target, self.size, mac_ratio, self.latency,
                                              span=0.2 if backend == "cpu" else 0.3, backend=backend)
            cache[key] = [mac_ratio, lat_ratio, rel]
            path.write_text(json.dumps(cache, indent=2))
        return tuple(cache[key])  # type: ignore[return-value]

    def run(self) -> list[dict]:
        rows = [{"name": "original", "kind": "original", "ratio": None, "params": params(self.original),
                 "macs": self.macs_original, "images": None, "start_val_top1": None,
                 "val_top1": None, "test_top1": self._original_top1(), "train_seconds": None}]
        # the students at equal latency first (the issue's question), then the composition, then equal MACs
        labels = list(self.case.rules)
        plan: list[tuple[str, Callable[[], dict]]] = []
        for rule in labels:
            plan.append((rule, lambda r=rule: self.conversion(r)))
        for rule in labels:
            plan.append(self._peer("latency", rule, 1))
        composition = self.case.composition()
        if composition and not self.args.skip_composition:
            plan.append((composition, self.composition))
        for rule in labels:
            plan.append(self._peer("MACs", rule, 0))
        for rule in self.case.ort_match:
            plan.append(self._peer("ORT-latency", rule, 1, backend="ort"))
        for name, build in plan:
            cached = self._cached(name)  # before building: a matched student's build converts (and refits) first
            if cached is not None:
                rows.append(cached)
                continue
            if self.args.only_cached or not (self.args.students is None or name in self.args.students):
                _log(f"accuracy: {name} skipped (no result yet, and not asked for)")
                continue
            _log(f"accuracy: {name}")
            rows.append(build())
        order = [name for name in self.case.order() if any(r["name"] == name for r in rows)]
        rows = sorted(rows, key=lambda r: order.index(r["name"]) if r["name"] in order else -1)
        self._latency(rows)
        return rows

    def _peer(self, match: str, rule: str, which: int, backend: str = "cpu") -> tuple[str, Callable[[], dict]]:
        """The plan entry of the original pruned to ``rule``'s MACs (``which`` 0) or latency on ``backend`` (1)."""
        name = f"pruned@{match}({rule})"
        return name, lambda: self.pruned(name, self.original, self.matched(
            rule, self.original, self.convert(rule), backend)[which], "Torch-Pruning")

    def composition(self) -> dict:
        """The case's first conversion (r50-hybrid), reconstructed, then pruned to the latency of its second
        (r50-max)."""
        first, target = self.case.compose  # type: ignore[misc]
        converted = self.reconstructed(first)
        _, lat_ratio, _ = self.matched(f"{first}+prune", converted, self.convert(target))
        return self.pruned(self.case.composition(), converted, lat_ratio,  # type: ignore[arg-type]
                           "pfconvert + Torch-Pruning", reconstructed_from=first)

    def _original_top1(self) -> float:
        path = self.out / "original-test.json"
        if not path.is_file():
            path.write_text(json.dumps({"test_top1": _test_top1(self.original, self.args.data, self.data_cfg,
                                                                self.args.test_images)}))
        return json.loads(path.read_text())["test_top1"]

    def rebuild(self, row: dict) -> nn.Module:
        """A student as fine-tuned (weights from its run)."""
        name = row["name"]
        if row["kind"] == "original":
            return self.original
        if row["kind"] == "pfconvert":
            return pfconvert.load(self.out / name).eval()
        compose = self.case.compose
        base = self.reconstructed(compose[0]) if compose and name == self.case.composition() else self.original
        model = prune(base, row["ratio"], self.size)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(self.out / name / "finetuned.safetensors")))
        return model.eval()

    def _latency(self, rows: list[dict]) -> None:
        """Every student timed side by side at the Fashion-MNIST input size on each CPU backend, batch 1."""
        config = LatencyConfig(batch_sizes=(1,), input_size=self.size, runs=self.args.runs_32, warmup=5,
                               threads=self.args.threads, max_seconds=15, deploy_method=self.args.deploy)
        models = {row["name"]: self.rebuild(row) for row in rows}
        label = f"{self.model} {self.size[-1]} px"
        timings = measure(models, self.args.backends, config, progress=lambda t: _log(f"{label}: timing {t}"))
        for row in rows:
            row["latency"] = {}
            for (backend, bs), times in timings.items():
                row["latency"][f"{backend_label(backend, config.deploy_method)} bs{bs}"] = round(
                    median_ms(times[row["name"]]), 3)


def accuracy_markdown(rows: list[dict], accuracy: Accuracy) -> str:
    """The accuracy table of one pipeline (``accuracy``: its students, budget and the example's recipe)."""
    cells = list(rows[0]["latency"]) if rows else []
    base = {c: rows[0]["latency"][c] for c in cells}
    out = ["| student | kind | prune ratio | params | MMACs | fine-tune images x 3 epochs | val top-1 at start | "
           "val top-1 (best epoch) | **test top-1** | " + " | ".join(f"{c} ms (speed-up)" for c in cells) + " |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(cells)]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if v is not None else "-"

    for r in rows:
        out.append(f"| {r['name']} | {r['kind']} | {num(r['ratio'], '.3f')} | {r['params'] / 1e6:.2f}M | "
                   f"{r['macs'] / 1e6:.1f} | {num(r['images'], 'd')} | {num(r['start_val_top1'], '.2f')} | "
                   f"{num(r['val_top1'], '.2f')} | **{r['test_top1']:.2f}** | "
                   + " | ".join(f"{r['latency'][c]:.2f} ({base[c] / r['latency'][c]:.2f}x)" for c in cells) + " |")
    pipe, budget = accuracy.pipe, accuracy.budget
    px = pipe.img_size
    frozen = ", BatchNorm statistics frozen" if pipe.freeze_bn else ""
    out += ["", f"Fashion-MNIST, {accuracy.model} at {px} px (10 classes). Every student comes from the same original "
            f"(trained {budget.train_epochs} epochs x {budget.train_images} images) and is fine-tuned by "
            "distillation from it for 3 epochs within 30% of the original's training compute (the example's "
            f"recipe: batch {pipe.finetune_batch_size}, lr {pipe.finetune_lr:g}, un-augmented{frozen}, BatchNorm "
            f"re-estimation on {budget.calib_images} images; the students built by a conversion also "
            "charge their least-squares reconstruction). 'val top-1 at start': after reconstruction / BatchNorm "
            "re-estimation, before training. Best epoch chosen on the validation split (10% of the training "
            f"images); test top-1 on the 10k test images. Latency at {px} px, batch 1, all students timed side by "
            f"side; pruned@latency ratios were matched on the deployed CPU path at {px} px"
            + (", pruned@ORT-latency ones on ONNX Runtime." if accuracy.case.ort_match else ".")]
    return "\n".join(out) + "\n"


NOTES = """## Notes

- resnet50's students were fine-tuned by two runs at once, one thread each (``--threads 1 --accuracy-models resnet50
  --students ...``, the seven students split between them), after its latency-matched ratios had been fitted with
  nothing else running (``OUT/resnet50/ratios.json``, which the runs read); the ``pruned@ORT-latency`` students of
  resnet26 and resnet50 the same way, after the others. resnet50's original was trained by
  ``python examples/fashion_mnist/run.py --models resnet50 --rules``. Students a run did not fine-tune
  (``--students``) are absent from the accuracy tables.
- The speed rows were measured by ``python benchmarks/peers.py --skip-accuracy --threads 1 --runs 5 --warmup 1
  --max-seconds 10 --match-runs 5 --out runs/peers-speed`` (its machine line: load average 1.44 at start, 768 s) and
  copied to ``runs/peers/speed.json``, which ``--reuse-speed`` reads; it ran on one core while the resnet26
  fine-tunes ran on the other. ``--threads 1`` keeps the timings of interleaved rounds stable under such load (two
  threads spin against the other job and scatter by 5x), so the ms are one core's, and only the ratios within one
  table compare.
- "Equal latency" is matched on PyTorch's deployed CPU path (llga) at batch 1 only, and only as well as one
  interleaved timing of a grid allows (the matched ratio of the same peer moved by up to 0.08 between runs of this
  page). On ONNX Runtime the pruned peers' channel counts (no ``round_to``) run slower than the conversions at the
  same MACs, so there the peer of equal latency, ``pruned@ORT-latency(r50-max)`` (ResNet cases only), is pruned
  harder. ORT's latency jumps with the channel counts (at 32 px one ratio step of 0.004 moved it from 1.05x to 0.69x
  of the target's), so that match is the ratio timed closest to r50-max's latency after a few refining steps, not an
  exact one; the ratios and their measured latency are in ``OUT/MODEL/ratios.json``.
- mobilenetv2_050 + ``dw-hybrid`` or the planner's rule is no faster than the original on the deployed path at batch
  1, so the latency-matched peers are barely pruned (ratios 0.04-0.08): the match is within the noise there.
- The pruned peers are Torch-Pruning's ``MagnitudePruner`` with ``MagnitudeImportance(p=1)``, one uniform ratio, the
  classifier kept; no ``round_to``. A tuned pruning schedule (global or learned importance, iterative pruning)
  could do better than this baseline, and so could a longer fine-tune of any student.
- Composition, as a recipe (what ``r50-hybrid+prune`` is)::

      import pfconvert; from benchmarks.peers import prune  # from the repository root
      model, record = pfconvert.convert("resnet26", "r50-hybrid", checkpoint="original.safetensors",
                                        input_size=(3, 32, 32), num_classes=10)
      # optional: pfconvert.recover.refit.reconstruct(model, original, calibration_batches) first
      model = prune(model, 0.2, (3, 32, 32))   # Torch-Pruning, channels pass through the pools
      # then fine-tune by distillation from the original (pfconvert.recover.finetune.runner.run_finetune)
"""


# -- main --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=list(CASES), help="comma-separated")
    parser.add_argument("--size", type=int, default=224, help="input size of the speed table")
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 16])
    parser.add_argument("--backends", type=lambda t: t.split(","), default=None, help="default: every CPU backend")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time budget per cell (>= 5 rounds)")
    parser.add_argument("--match-runs", type=int, default=10, help="timed rounds per latency-matching step (224 px)")
    parser.add_argument("--match-runs-32", type=int, default=60,
                        help="timed rounds per latency-matching step at the accuracy input size")
    parser.add_argument("--runs-32", type=int, default=100, help="timed rounds of the accuracy table's latency")
    parser.add_argument("--reuse-speed", action="store_true",
                        help="speed: keep the rows of models an earlier run finished (OUT/speed.json)")
    parser.add_argument("--skip-latency-match", action="store_true", help="speed table: only the MACs-matched peers")
    parser.add_argument("--deploy", default="auto", help="deploy method of the 'cpu' backend")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--accuracy-models", type=lambda t: t.split(","), default=["resnet26", "mobilenetv2_050"],
                        help=f"comma-separated pipelines of the accuracy tables: {', '.join(ACCURACY_CASES)}")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-composition", action="store_true")
    parser.add_argument("--students", type=lambda t: t.split(","), default=None,
                        help="accuracy: fine-tune only these students (comma-separated names as in the table; the "
                             "others are tabled when an earlier run finished them)")
    parser.add_argument("--only-cached", action="store_true",
                        help="accuracy: table only the students whose fine-tune has finished (OUT/MODEL/*/peers.json)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--test-images", type=int, default=None, help="default: the whole 10k test split")
    parser.add_argument("--out", type=Path, default=Path("runs/peers"))
    parser.add_argument("--quick", action="store_true", help="accuracy: tiny smoke run (a few hundred images)")
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(CASES)}")
    unknown = [m for m in args.accuracy_models if m not in ACCURACY_CASES]
    if unknown:
        parser.error(f"unknown accuracy model(s) {unknown}; choose from {list(ACCURACY_CASES)}")
    _torch_pruning()
    args.backends = args.backends or [b for b in default_backends() if not b.startswith("cuda")]
    # the budget of the original's training (examples/fashion_mnist/run.py's defaults), from which the fine-tunes' is
    # derived; --quick: a smoke run of the whole accuracy path on a few hundred images
    args.finetune_budget = {"train_images": 12000, "train_epochs": 10}
    if args.quick:
        args.finetune_budget = {"train_images": 512, "train_epochs": 1, "val_images": 256, "calib_images": 64}
        args.test_images = args.test_images or 256
    machine = describe_machine(machine_info(args.threads))
    start = time.perf_counter()
    sections, data = [], {}
    if not args.skip_speed:
        rows = run_speed(args)
        data["speed"] = rows
        sections.append(f"## Speed ({args.size} px, random weights)\n\n{speed_markdown(rows)}")
        sys.stdout.write(sections[-1] + "\n")
    if not args.skip_accuracy:
        if args.threads is not None:  # the fine-tunes too: on a loaded machine two threads spin against other jobs
            torch.set_num_threads(args.threads)
        data["accuracy"] = {}
        for model in args.accuracy_models:
            accuracy = Accuracy(args, model)
            rows = data["accuracy"][model] = accuracy.run()
            sections.append(f"## Accuracy (Fashion-MNIST, {model} at {accuracy.pipe.img_size} px)\n\n"
                            f"{accuracy_markdown(rows, accuracy)}")
            sys.stdout.write(sections[-1] + "\n")
    machine += f", {time.perf_counter() - start:.0f} s total, {time.strftime('%Y-%m-%d')}"
    sys.stdout.write(f"Machine: {machine}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps({"machine": machine, **data}, indent=2))
    if args.write_docs:
        write_page("peers", "pfconvert against structured pruning (Torch-Pruning)", "\n".join(sections), machine,
                   NOTES)


if __name__ == "__main__":
    main()
