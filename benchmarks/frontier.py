"""The accuracy-latency frontier (issue 28): conversion rules, channel pruning and the planner's choices, each
fine-tuned with the same budget, test top-1 against latency measured side by side; and how well the planner's proxy
ranks them.

For each model (``--models``: the from-scratch originals of examples/fashion_mnist/run.py, trained or reused under
``OUT/MODEL/original.safetensors``; or ``--teacher NAME=WEIGHTS --teacher-images N``, a pretrained one) the
candidates are:

- conversion rules: ``r50-max`` and ``r50-hybrid`` on every stage and on each stage alone (ResNets), ``maxpool`` and
  ``dw-hybrid`` (depthwise nets), whole and per stage;
- channel pruning of the original at each ``--prune-ratios`` (:func:`pfconvert.conversion.pruning.prune_channels`;
  ``--prune-importance group-norm`` and ``--prune-global`` choose the stronger pruner, and the planner's, and the
  candidates' names say which: ``prune 0.35-group-norm-global``);
- the planner's choices: ``pfconvert plan`` (:func:`pfconvert.study.plan_on_data`, with pruning as a lever and its
  proxy) run once on the first backend at batch 1; at each latency target (``--targets``, fractions of the original's
  latency) the candidate of the highest planner score whose measured ratio is within the target.

Every candidate gets two planner scores on the validation split (carved from the training images): the old one (top-1
right after conversion, reconstruction and BatchNorm re-estimation) and the proxy's (the same after a short
distillation from the original, :class:`pfconvert.study.proxy.DistillProxy`). Then every candidate is fine-tuned the
way ``pfconvert finetune`` would (:func:`pfconvert.recover.finetune.run_finetune`, the machinery of
:func:`pfconvert.finetune`: ``FinetuneConfig`` defaults, plus the conversion family's recipe where the candidate's
replaced layers are all depthwise convs (:data:`pfconvert.recover.finetune.recipes.FAMILY_RECIPES`), with
``train_images`` = ``--budget-share`` of the original's training images, one run per ``--seeds``; the best validation
point kept) and scored on the test split. A cached fine-tune made with another recipe is run again. The page gives
the Spearman rank correlation (``scipy.stats.spearmanr``) of each planner score with the mean fine-tuned test top-1.

Latency: every candidate and the original, timed side by side in one run (:func:`pfconvert.report.latency.measure`,
interleaved rounds) on each ``--backends`` at ``--batch-sizes`` (random input; weights do not change speed).

Everything is cached under ``--out`` (``OUT/MODEL/scores.json``, ``OUT/MODEL/seedS/NAME/row.json`` with the
fine-tuned weights, ``OUT/MODEL/timings.json``, ``OUT/MODEL/plan.json``): a rerun resumes where the last one stopped.
The page states the compute each table took (the sum of the cached steps' seconds). Runs of one model and size with
different ``--budget-share`` (this run and ``--with-results``) get a table of each shared candidate's test top-1 per
budget (:func:`budget_table`); ``--docs-page NAME`` writes such a page beside docs/results/frontier.md.

    python -m benchmarks.frontier --models resnet26 --size 32 --seeds 0 --write-docs
    python -m benchmarks.frontier --teacher efficientnet_lite1=teacher.safetensors --teacher-images 40000 --size 64
    python -m benchmarks.frontier --quick                                    # a smoke run on a few hundred images
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pfconvert
from pfconvert.conversion.models import create_model
from pfconvert.conversion.pruning import PRUNE_IMPORTANCES
from pfconvert.report.backends import backend_label
from pfconvert.report.latency import LatencyConfig, measure
from pfconvert.report.machine import describe_machine, machine_info
from pfconvert.report.report import median_ms

try:
    from ._results import RESULTS_DIR, add_docs_flag, ov_int8_precision, write_page  # imported as benchmarks.frontier
    from .peers import _example, _test_top1
except ImportError:
    from _results import RESULTS_DIR, add_docs_flag, ov_int8_precision, write_page  # run as a script
    from peers import _example, _test_top1

RESNET_RULES = ("r50-max", "r50-hybrid")
DEPTHWISE_RULES = ("maxpool", "dw-hybrid")
BUDGET_SHARE = 0.3  # fine-tune images / the original's training images (examples/fashion_mnist/run.py's share)


def _log(text: str) -> None:
    print(f"[frontier] {text}", file=sys.stderr, flush=True)


@dataclass
class Spec:
    """One candidate: how to build it from the original (a rule file's text, applied by :func:`pfconvert.convert`,
    and/or a pruning ratio applied after it)."""

    name: str
    method: str  # "rules" | "pruning" | "planner"
    rules: str | None = None  # rule-file YAML
    prune: float | None = None
    prune_importance: str = "l1"  # how ``prune`` prunes (pfconvert.conversion.pruning.prune_channels)
    prune_global: bool = False
    proxy_top1: float | None = None  # planner scores (validation split)
    old_top1: float | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("_")


@dataclass
class Original:
    model: str
    weights: Path
    img_size: int
    train_images: int  # images (x epochs) it was trained on: the budget's base
    label: str


class Frontier:
    """The candidates of one original, their scores, fine-tunes and timings (cached under OUT/MODEL)."""

    def __init__(self, args: argparse.Namespace, original: Original) -> None:
        from pfconvert.data import resolve_data_config

        self.args, self.orig = args, original
        self.size = (3, original.img_size, original.img_size)
        self.out = args.out / f"{original.model}-{original.img_size}px"
        self.out.mkdir(parents=True, exist_ok=True)
        self.model = create_model(original.model, checkpoint=original.weights, num_classes=10).eval()
        self.data_cfg = resolve_data_config(self.model, input_size=self.size)
        self.budget = max(args.batch_size, round(args.budget_share * original.train_images))
        self.compute: dict[str, float] = {}
        self.missing: list[str] = []  # cells the table lacks, in words
        self.families: dict[str, str | None] = {}  # candidate -> conversion family, as build() found it
        self.planner_targets: dict[str, str] = {}  # latency target -> the candidate the planner chose for it

    # -- candidates ----------------------------------------------------------------------------------------------

    def rule_specs(self) -> list[Spec]:
        from pfconvert.conversion.rewrite import match_rules
        from pfconvert.rules import load_rules
        from pfconvert.study.plan import candidate_rules
        from pfconvert.study.sensitivity import stage_groups

        specs = []
        for name in self.rules():
            rules = load_rules(name)
            mine = [Spec(name, "rules", rules.text)]
            matches, _ = match_rules(self.model, rules, self.size)
            groups = stage_groups(matches)
            for group in sorted(g for g in groups if g.staged):
                if len(groups) > 1:
                    mine.append(Spec(f"{name}: {group}", "rules", candidate_rules(rules, groups, [group]).text))
            specs += mine[: self.args.per_rule_candidates] if self.args.per_rule_candidates else mine
        return specs[: self.args.max_rule_candidates] if self.args.max_rule_candidates else specs

    def rules(self) -> tuple[str, ...]:
        return RESNET_RULES if "resnet" in self.orig.model else DEPTHWISE_RULES

    def build(self, spec: Spec) -> nn.Module:
        from pfconvert.recover.finetune.recipes import conversion_family
        from pfconvert.rules.loading import parse_rules

        model = copy.deepcopy(self.model)
        self.families[spec.name] = None
        if spec.rules is not None:
            torch.manual_seed(0)
            model, record = pfconvert.convert(model, parse_rules(spec.rules, source=spec.name), input_size=self.size,
                                              inplace=True)
            self.families[spec.name] = conversion_family(record.replacements)
        if spec.prune:
            from pfconvert.conversion.pruning import prune_channels

            prune_channels(model, spec.prune, self.size, importance=spec.prune_importance,
                           global_pruning=spec.prune_global)
        return model.eval()

    # -- planner scores --------------------------------------------------------------------------------------------

    def _scoring(self) -> tuple[Any, list[torch.Tensor]]:
        """The planner's validation tools on the original and its calibration batches."""
        from pfconvert.study.sensitivity import validation_tools

        tools = validation_tools(self.model, self.args.data, data_cfg=self.data_cfg, limit_val=self.args.val_images,
                                 bn_recalib_images=self.args.calib_images)
        return tools, tools.calib_batches(self.args.calib_images)

    def _prepared(self, spec: Spec, tools: Any, batches: list[torch.Tensor]) -> nn.Module:
        """``spec`` built and prepared as the planner scores it: a conversion reconstructed (a pruned model, by
        ratio or by its rule file's ``prune:`` section, is not: its channels no longer match the original's), then
        BatchNorm re-estimated."""
        from pfconvert.recover.refit import reconstruct
        from pfconvert.rules.loading import parse_rules

        model = self.build(spec)
        rules = parse_rules(spec.rules, source=spec.name) if spec.rules is not None else None
        if rules is not None and not spec.prune and rules.ruleset.prune is None:
            reconstruct(model, self.model, batches, input_size=self.size)
        tools.recalibrate(model)
        return model

    def score(self, specs: list[Spec]) -> None:
        """The old and the proxy score of every spec without one (the planner's preparation: reconstruction for
        conversions, BatchNorm re-estimation for all)."""
        from pfconvert.study.proxy import DistillProxy

        path = self.out / "scores.json"
        cache = json.loads(path.read_text()) if path.is_file() else {}
        todo = [s for s in specs if s.proxy_top1 is None and s.name not in cache]
        if todo:
            started = time.perf_counter()
            tools, batches = self._scoring()
            proxy = DistillProxy.build(self.model, self.args.data, self.data_cfg, images=self.args.proxy_images)
            cache["_proxy"] = proxy.to_dict()
            for spec in todo:
                _log(f"{self.orig.model}: planner scores of {spec.name}")
                model = self._prepared(spec, tools, batches)
                old = tools.top1(model)
                proxy(model)
                cache[spec.name] = {"old_top1": old, "proxy_top1": tools.top1(model),
                                    "seconds": 0.0}
                cache[spec.name]["seconds"] = round(time.perf_counter() - started, 1)
                started = time.perf_counter()
                path.write_text(json.dumps(cache, indent=2))
        for spec in specs:
            if spec.name in cache:
                spec.old_top1, spec.proxy_top1 = cache[spec.name]["old_top1"], cache[spec.name]["proxy_top1"]
        self.compute["planner scores"] = sum(v["seconds"] for k, v in cache.items() if not k.startswith("_"))
        self.proxy_settings = cache.get("_proxy", {})

    def proxy_at(self, specs: list[Spec], lr: float) -> dict[str, float]:
        """The proxy score of every spec with the proxy's peak learning rate at ``lr`` (the images and seed of
        :meth:`score`; conversions reconstructed, pruned models, the planner's included, BatchNorm re-estimated only),
        cached in ``OUT/MODEL/proxy-lr{lr}.json``: how the rank correlation depends on the proxy's rate. List the
        default rate too to compare like with like (the planner prepared its pruned conversions before pruning)."""
        from pfconvert.study.proxy import DistillProxy

        path = self.out / f"proxy-lr{lr:g}.json"
        cache = json.loads(path.read_text()) if path.is_file() else {}
        todo = [s for s in specs if s.name not in cache]
        if todo and not self.args.only_cached:
            tools, batches = self._scoring()
            proxy = DistillProxy.build(self.model, self.args.data, self.data_cfg, images=self.args.proxy_images, lr=lr)
            for spec in todo:
                _log(f"{self.orig.model}: proxy score at lr {lr:g} of {spec.name}")
                started = time.perf_counter()
                model = self._prepared(spec, tools, batches)
                proxy(model)
                cache[spec.name] = {"proxy_top1": tools.top1(model), "seconds": round(time.perf_counter() - started, 1)}
                path.write_text(json.dumps(cache, indent=2))
        self.compute[f"proxy scores at lr {lr:g}"] = sum(v["seconds"] for v in cache.values())
        return {name: v["proxy_top1"] for name, v in cache.items()}

    def planner_specs(self) -> list[Spec]:
        """The planner's choice at each latency target (module docstring), from one cached ``plan_on_data`` run."""
        from pfconvert.conversion.rewrite import match_rules
        from pfconvert.rules import load_rules
        from pfconvert.study.plan import Candidate, PlanRefused, _rules_of, plan_on_data
        from pfconvert.study.sensitivity import stage_groups

        path = self.out / f"plan{self.prune_label}.json"
        rules = [load_rules(r) for r in self.rules()]
        if not path.is_file():
            started = time.perf_counter()
            _log(f"{self.orig.model}: pfconvert plan on {self.args.backends[0]} (proxy {self.args.proxy_images} "
                 "images)")
            try:
                result = plan_on_data(self.model, rules, self.args.data, backend=self.args.backends[0],
                                      batch_sizes=(1,),
                                      max_drop=100.0, data_cfg=self.data_cfg, limit_val=self.args.val_images,
                                      bn_recalib_images=self.args.calib_images,
                                      reconstruct_images=self.args.calib_images, runs=self.args.plan_runs,
                                      max_seconds=self.args.plan_seconds, prune_ratios=self.args.plan_prune_ratios,
                                      prune_importance=self.args.prune_importance,
                                      prune_global=self.args.prune_global,
                                      proxy_images=self.args.proxy_images,
                                      on_step=lambda t: _log(f"{self.orig.model}: plan: {t}"))
            except PlanRefused as exc:
                result = exc.result
            data = result.to_dict()
            data["seconds"] = round(time.perf_counter() - started, 1)
            path.write_text(json.dumps(data, indent=2))
        data = json.loads(path.read_text())
        self.compute["plan"] = data["seconds"]
        groups_of = {r.name: stage_groups(match_rules(self.model, r, self.size)[0]) for r in rules}
        specs: list[Spec] = []
        for target in self.args.targets:
            within = [c for c in data["candidates"] if c["latency_ms"]["1"] / c["original_ms"]["1"] <= target]
            if not within:
                _log(f"{self.orig.model}: no planned candidate within {target:g}x latency")
                self.missing.append(f"the planner's choice at {target:g}x latency: none of its candidates was "
                                    f"measured that fast on {self.args.backends[0]} (batch 1)")
                continue
            best = max(within, key=lambda c: c["top1"])
            cand = Candidate(best["rule"], [g for g in groups_of.get(best["rule"], {})
                                            if g.to_json() in best["groups"]], best["layers"], best["top1"],
                             best["drop"], best["params"], best["macs"], shrunk=best["shrunk"], prune=best["prune"],
                             prune_label=best.get("prune_label", ""))
            written = _rules_of(cand, rules, groups_of, 8, self.args.prune_importance, self.args.prune_global)
            spec = Spec(f"plan@{target:g}x: {best['name']}", "planner", written.text if written is not None else None,
                        best["prune"] if written is None else None, self.args.prune_importance,
                        self.args.prune_global, best["top1"], best.get("top1_before_proxy"))
            same = [s for s in specs if s.rules == spec.rules and s.prune == spec.prune]
            if same:
                self.missing.append(f"the planner's choice at {target:g}x latency is the one at "
                                    f"{same[0].name.split(':')[0][5:]} (tabled once)")
            else:
                specs.append(spec)
            self.planner_targets[f"{target:g}"] = (same[0] if same else spec).name
        return specs

    # -- fine-tunes ------------------------------------------------------------------------------------------------

    def finetuned(self, spec: Spec, seed: int) -> dict[str, Any] | None:
        from safetensors.torch import save_file

        from pfconvert.recover.finetune.config import FinetuneConfig
        from pfconvert.recover.finetune.progress import TextReporter
        from pfconvert.recover.finetune.runner import run_finetune

        out = self.out / f"seed{seed}" / spec.slug
        row_file = out / "row.json"
        student = self.build(spec) if spec.name not in self.families else None  # also finds its conversion family
        if row_file.is_file():
            row = json.loads(row_file.read_text())
            if row.get("recipe", "default") == (self.families[spec.name] or "default"):
                return row  # else: fine-tuned with another recipe (before the family recipes were used here)
        if self.args.only_cached or not selected(spec.name, self.args.only):
            return None
        _log(f"{self.orig.model}: fine-tuning {spec.name} (seed {seed}, {self.budget} images)")
        started = time.perf_counter()
        student = student if student is not None else self.build(spec)
        values: dict[str, Any] = {"data": self.args.data, "img_size": self.orig.img_size, "train_images": self.budget,
                                  "limit_val": self.args.val_images, "workers": self.args.workers, "seed": seed,
                                  "eval_teacher": False, "batch_size": self.args.batch_size}
        family = self.families.get(spec.name)
        if family is not None:  # as `pfconvert finetune` does: the family's recipe where no setting says otherwise
            from pfconvert.recover.finetune.recipes import BUDGET_CAPPED, FAMILY_RECIPES

            values = {**{k: min(v, self.budget) if k in BUDGET_CAPPED else v
                         for k, v in FAMILY_RECIPES[family].items()}, **values}
        if self.args.finetune_lr is not None:
            values["lr"] = self.args.finetune_lr
        if self.args.quick:
            values.update(lr_probe_images=32, bn_recalib_images=32)
        best = out / "finetuned.safetensors"
        torch.manual_seed(seed)
        result = run_finetune(student, copy.deepcopy(self.model), FinetuneConfig(**values), out,
                              data_cfg=self.data_cfg, overwrite=True, reporter=TextReporter(quiet=True),
                              export=lambda m, _d: (save_file({k: v.contiguous() for k, v in m.state_dict().items()},
                                                              str(best)), best)[1])
        from safetensors.torch import load_file

        student.load_state_dict(load_file(str(best)))
        row = {"name": spec.name, "seed": seed, "val_top1": (result.best or {}).get("val_top1"),
               "test_top1": _test_top1(student.eval(), self.args.data, self.data_cfg, self.args.test_images),
               "lr": result.lr, "recipe": family or "default", "seconds": round(time.perf_counter() - started, 1)}
        row_file.write_text(json.dumps(row, indent=2))
        return row

    # -- latency ---------------------------------------------------------------------------------------------------

    def timings(self, specs: list[Spec]) -> dict[str, dict[str, float]]:
        """``{candidate: {"BACKEND bsN": median ms}}``, the original among them, all timed in one run (cached while
        the set of candidates and the settings are the same)."""
        path = self.out / "timings.json"
        key = {"names": sorted(s.name for s in specs), "backends": self.args.backends,
               "batch_sizes": self.args.batch_sizes, "runs": self.args.runs, "threads": self.args.threads}
        cached = json.loads(path.read_text()) if path.is_file() else {}
        if cached.get("key") != key:
            started = time.perf_counter()
            config = LatencyConfig(batch_sizes=tuple(self.args.batch_sizes), input_size=self.size, runs=self.args.runs,
                                   warmup=3, threads=self.args.threads, max_seconds=self.args.max_seconds)
            models = {"original": self.model, **{s.name: self.build(s) for s in specs}}
            times = measure(models, self.args.backends, config,
                            progress=lambda t: _log(f"{self.orig.model}: timing {t}"))
            table: dict[str, dict[str, float]] = {name: {} for name in models}
            for (backend, bs), rounds in times.items():
                label = f"{backend_label(backend, times.methods.get((backend, bs), 'auto'))} bs{bs}"
                for name in models:
                    table[name][label] = round(median_ms(rounds[name]), 4)
            cached = {"key": key, "ms": table, "seconds": round(time.perf_counter() - started, 1),
                      "rounds": {f"{b} bs{bs}": len(r["original"]) for (b, bs), r in times.items()}}
            path.write_text(json.dumps(cached, indent=2))
        self.compute["timing"] = cached["seconds"]
        return cached["ms"]

    @property
    def prune_label(self) -> str:
        """``""`` for L1 uniform pruning, else ``-group-norm``, ``-global``... (names and cache files carry it)."""
        from pfconvert.conversion.pruning import prune_label

        return prune_label(self.args.prune_importance, self.args.prune_global)

    def prune_specs(self) -> list[Spec]:
        """Channel pruning of the original at each ``--prune-ratios``, by the ``--prune-importance`` pruner."""
        return [Spec(f"prune {r:g}{self.prune_label}", "pruning", None, r, self.args.prune_importance,
                     self.args.prune_global) for r in self.args.prune_ratios]

    # -- the whole table -------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        specs = self.rule_specs() + self.prune_specs()
        self.score(specs)
        specs += self.planner_specs()
        rows: dict[str, list[dict[str, Any]]] = {}
        for seed in self.args.seeds:
            for spec in specs:
                row = self.finetuned(spec, seed)
                if row is not None:
                    rows.setdefault(spec.name, []).append(row)
        self.compute["fine-tunes"] = sum(r["seconds"] for runs in rows.values() for r in runs)
        ms = self.timings(specs)
        original_test = self.original_test()
        out = []
        for spec in specs:
            runs = rows.get(spec.name, [])
            tests = [r["test_top1"] for r in runs]
            out.append({**asdict(spec), "rules": None, "seeds": [r["seed"] for r in runs],
                        "test_top1": statistics.fmean(tests) if tests else None,
                        "test_spread": statistics.stdev(tests) if len(tests) > 1 else (0.0 if tests else None),
                        "latency_ms": ms.get(spec.name, {})})
        alternatives = {}
        for lr in self.args.proxy_lrs:
            at = self.proxy_at(specs, lr)
            scored = [{**r, "proxy_top1": at[r["name"]]} for r in out if r["name"] in at]
            corr = correlation(scored, keys=("proxy_top1",))
            alternatives[f"{lr:g}"] = {**(corr["proxy_top1"] or {}), "candidates": corr["candidates"]}
        return {"model": self.orig.model, "label": self.orig.label, "img_size": self.orig.img_size,
                "budget_images": self.budget, "original_test_top1": original_test, "original_ms": ms["original"],
                "rows": out, "compute_s": dict(self.compute), "proxy": self.proxy_settings,
                "correlation": correlation(out), "proxy_alternatives": alternatives, "seeds": self.args.seeds,
                "planner_targets": dict(self.planner_targets),
                "missing": self.missing + [f"{r['name']}: not fine-tuned (seeds {self.args.seeds})"
                                           for r in out if r["test_top1"] is None],
                "settings": {"val_images": self.args.val_images, "test_images": self.args.test_images or "all",
                             "finetune_lr": self.args.finetune_lr or "the fine-tune's probe",
                             "budget_share": self.args.budget_share, "proxy_images": self.args.proxy_images,
                             "threads": self.args.threads, "backends": self.args.backends,
                             "plan_prune_ratios": self.args.plan_prune_ratios, "targets": self.args.targets,
                             "prune_importance": self.args.prune_importance, "prune_global": self.args.prune_global,
                             "rule_candidates": {"per_rule": self.args.per_rule_candidates,
                                                 "max": self.args.max_rule_candidates}}}

    def original_test(self) -> float:
        path = self.out / "original-test.json"
        if not path.is_file():
            path.write_text(json.dumps({"test_top1": _test_top1(self.model, self.args.data, self.data_cfg,
                                                                self.args.test_images)}))
        return json.loads(path.read_text())["test_top1"]


def correlation(rows: list[dict[str, Any]], keys: tuple[str, ...] = ("proxy_top1", "old_top1")) -> dict[str, Any]:
    """Spearman's rank correlation of each planner score with the mean fine-tuned test top-1, over the candidates
    that have both."""
    import math
    import warnings

    from scipy.stats import spearmanr

    done = [r for r in rows if r["test_top1"] is not None and r["proxy_top1"] is not None]
    out: dict[str, Any] = {"candidates": len(done)}
    for key in keys:
        if len(done) >= 3:
            with warnings.catch_warnings():  # a constant score: no correlation is defined (None below)
                warnings.simplefilter("ignore")
                rho, p = spearmanr([r[key] for r in done], [r["test_top1"] for r in done])
            out[key] = {"rho": float(rho), "p": float(p)} if math.isfinite(rho) else None
        else:
            out[key] = None
    return out


def load_original(args: argparse.Namespace, name: str) -> Original:
    """The from-scratch original of examples/fashion_mnist/run.py (trained now unless cached), at ``--size``."""
    from dataclasses import replace

    ex = _example()
    pipe = ex.PIPELINES[name]
    if args.size:
        pipe = replace(pipe, img_size=args.size)
    images, epochs = (512, 2) if args.quick else (args.original_images, args.original_epochs)
    budget = ex.Budget(images, epochs, 1, args.val_images, args.test_images)
    out = args.out / f"{name}-{pipe.img_size}px"
    out.mkdir(parents=True, exist_ok=True)
    weights, _, fresh = ex.train_original(pipe, args.data, budget, out, retrain=False)
    _log(f"{name}: original {'trained' if fresh else 'reused'} ({weights})")
    return Original(name, weights, pipe.img_size, images * epochs,
                    f"{name} trained from scratch ({epochs} x {images} images, {pipe.img_size} px)")


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    cells = list(result["original_ms"])
    lines = [f"## {result['label']}{budget_tag(result, ', fine-tune budget ')}", "",
             f"Fine-tune budget: {result['budget_images']} training images per candidate and seed "
             f"({result['seeds']}), otherwise as `pfconvert finetune` does it: FinetuneConfig's defaults, with the "
             "depthwise family's recipe for depthwise conversions (frozen BatchNorm, no augmentation, reconstruction "
             "on the budget's images, 500 block steps per block); original: test top-1 "
             f"{result['original_test_top1']:.2f}%.", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in result["settings"].items()) + ".", ""]
    lines += ["| candidate | method | planner score, old (val) | planner score, proxy (val) | "
              "test top-1 (mean ± sd (seeds)) |" + "".join(f" latency {c} (ms, ratio) |" for c in cells),
              "|---" * (5 + len(cells)) + "|"]
    lines.append("| original | - | - | - | " + f"{result['original_test_top1']:.2f} |"
                 + "".join(f" {result['original_ms'][c]:.3f} (1.00) |" for c in cells))
    for r in result["rows"]:
        test = (f"{r['test_top1']:.2f} ± {r['test_spread']:.2f} ({len(r.get('seeds', []))})"
                if r["test_top1"] is not None else "missing")
        lat = "".join(f" {r['latency_ms'][c]:.3f} ({r['latency_ms'][c] / result['original_ms'][c]:.2f}) |"
                      if c in r["latency_ms"] else " missing |" for c in cells)
        fmt = lambda v: f"{v:.2f}" if v is not None else "missing"  # noqa: E731
        lines.append(f"| {r['name']} | {r['method']} | {fmt(r['old_top1'])} | {fmt(r['proxy_top1'])} | {test} |{lat}")
    corr = result["correlation"]
    desc = lambda c: f"{c['rho']:+.3f} (p = {c['p']:.3g})" if c else "undefined (fewer than 3 candidates, or a constant score)"  # noqa
    p = result["proxy"]
    lines += ["", f"Spearman rank correlation with the fine-tuned test top-1 over {corr['candidates']} candidates: "
              f"proxy score {desc(corr['proxy_top1'])}; old score (right after conversion) {desc(corr['old_top1'])}"
              + ("" if corr["candidates"] >= 10 else " (fewer than the 10 candidates the issue asks for)") + ".",
              "", f"Proxy: {p.get('images')} training images per candidate ({p.get('steps')} steps of "
              f"{p.get('batch_size')}, lr {p.get('lr')}, seed {p.get('seed')})."
              + "".join(f" With the proxy's lr at {lr}: rho {c['rho']:+.3f} (p = {c['p']:.3g}) over {c['candidates']} "
                        "candidates (the planner's choices scored again at that rate too)."
                        if c.get("rho") is not None else f" With the proxy's lr at {lr}: undefined."
                        for lr, c in result.get("proxy_alternatives", {}).items()), "",
              "Compute: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["compute_s"].items()) + ".", "",
              "Missing: " + ("; ".join(result["missing"]) if result["missing"] else "none") + ".", ""]
    lines += verdicts(result)
    lines += [f"![{Path(p_).stem}]({Path(p_).name})" for p_ in plots]
    return "\n".join(lines) + "\n"


def verdicts(result: dict[str, Any]) -> list[str]:
    """The issue's test, per latency target and timed backend: the most accurate fine-tuned candidate of each
    method whose measured ratio is within the target, and the planner's choice for that target against the best
    pruning there (mean test top-1)."""
    targets = result["settings"].get("targets") or []
    cells = list(result["original_ms"])
    if not targets or not cells:
        return []
    done = [r for r in result["rows"] if r["test_top1"] is not None]

    def best(method: str, cell: str, target: float) -> dict[str, Any] | None:
        within = [r for r in done if r["method"] == method and cell in r["latency_ms"]
                  and r["latency_ms"][cell] / result["original_ms"][cell] <= target]
        return max(within, key=lambda r: r["test_top1"]) if within else None

    def fmt(r: dict[str, Any] | None, cell: str) -> str:
        if r is None:
            return "none"
        return f"{r['name']}: {r['test_top1']:.2f} ({r['latency_ms'][cell] / result['original_ms'][cell]:.2f}x)"

    lines = ["", "At each latency target (measured ratio to the original on that backend at most the target), the most "
             "accurate fine-tuned candidate of each method, and the planner's own choice for the target (its "
             "timing during `plan` put it within the target; here it is timed again with the others):", "",
             "| backend | target | best conversion rule | best pruning | planner's choice | planner - pruning |",
             "|---|---:|---|---|---|---:|"]
    for cell in cells:
        for t in targets:
            rules, prune = best("rules", cell, t), best("pruning", cell, t)
            chosen = result.get("planner_targets", {}).get(f"{t:g}")
            planned = [r for r in done if r["method"] == "planner"
                       and (r["name"] == chosen if chosen else r["name"].startswith(f"plan@{t:g}x"))]
            pick = planned[0] if planned else None
            diff = (f"{pick['test_top1'] - prune['test_top1']:+.2f}" if pick is not None and prune is not None
                    else "-")
            pick_text = fmt(pick, cell) if pick is not None and cell in pick["latency_ms"] else "none"
            lines.append(f"| {cell} | {t:g}x | {fmt(rules, cell)} | {fmt(prune, cell)} | {pick_text} | {diff} |")
    return lines + [""]


def budget_tag(result: dict[str, Any], prefix: str) -> str:
    """``prefix`` + the fine-tune budget as a share of the original's training images (``100%``) when the run's
    budget is not the default :data:`BUDGET_SHARE`; "" when it is (the page's earlier sections keep their names)."""
    share = result.get("settings", {}).get("budget_share", BUDGET_SHARE)
    return "" if share == BUDGET_SHARE else f"{prefix}{share:.0%}"


def budget_table(results: list[dict[str, Any]]) -> list[str]:
    """Where several runs fine-tuned the same model at the same size with different budgets: each candidate they
    share, its test top-1 (mean over its seeds) at each budget, and the original's; [] when there is no such pair."""
    groups: dict[tuple[str, int], dict[float, dict[str, Any]]] = {}
    for r in results:
        share = r.get("settings", {}).get("budget_share", BUDGET_SHARE)
        groups.setdefault((r["model"], r["img_size"]), {})[share] = r
    out: list[str] = []
    for (model, size), by_share in groups.items():
        if len(by_share) < 2:
            continue
        shares = sorted(by_share)
        tops = {sh: {row["name"]: row for row in by_share[sh]["rows"] if row["test_top1"] is not None}
                for sh in shares}
        names = [n for n in tops[shares[0]] if all(n in tops[sh] for sh in shares)]
        if not names:
            continue
        cells = [c for c in by_share[shares[0]]["original_ms"]
                 if all(c in by_share[sh]["original_ms"] for sh in shares)]
        out += [f"## {model} at {size} px: fine-tune budget against accuracy", "",
                "Test top-1 (mean ± sd over the seeds run, their count in brackets) after fine-tuning with each budget "
                "(a share of the original's training images; each run's own section gives its settings), and the "
                "latency ratio of each run's own timing.", "",
                "| candidate | " + " | ".join(f"{sh:.0%} budget ({by_share[sh]['budget_images']} images)"
                                           for sh in shares)
                + " | " + " | ".join(f"{sh:.0%} - {shares[0]:.0%}" for sh in shares[1:])
                + "".join(f" | latency ratio {c}" for c in cells) + " |",
                "|---" * (1 + 2 * len(shares) - 1 + len(cells)) + "|",
                "| original | " + " | ".join(f"{by_share[sh]['original_test_top1']:.2f}" for sh in shares)
                + " | " + " | ".join("-" for _ in shares[1:]) + "".join(" | 1.00" for _ in cells) + " |"]
        for n in names:
            first = tops[shares[0]][n]
            ratios = ""
            for c in cells:  # each run's ratio, "/"-separated in budget order
                each = [tops[sh][n]["latency_ms"][c] / by_share[sh]["original_ms"][c] for sh in shares
                        if c in tops[sh][n]["latency_ms"]]
                ratios += " | " + ("/".join(f"{v:.2f}" for v in each) or "missing")
            out.append(f"| {n} | " + " | ".join(f"{tops[sh][n]['test_top1']:.2f} ± {tops[sh][n]['test_spread']:.2f} "
                                                f"({len(tops[sh][n].get('seeds', []))})" for sh in shares)
                       + " | " + " | ".join(f"{tops[sh][n]['test_top1'] - first['test_top1']:+.2f}"
                                            for sh in shares[1:]) + ratios + " |")
        out.append("")
    return out


def plot(result: dict[str, Any], folder: Path) -> list[str]:
    """One PNG per backend cell: test top-1 against latency, one curve per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    paths = []
    for cell in result["original_ms"]:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.scatter([result["original_ms"][cell]], [result["original_test_top1"]], marker="*", s=160, color="black",
                   label="original", zorder=3)
        for i, method in enumerate(("rules", "pruning", "planner")):
            rows = sorted((r for r in result["rows"] if r["method"] == method and r["test_top1"] is not None
                           and cell in r["latency_ms"]), key=lambda r: r["latency_ms"][cell])
            if rows:
                ax.errorbar([r["latency_ms"][cell] for r in rows], [r["test_top1"] for r in rows],
                            yerr=[r["test_spread"] for r in rows], marker="o", ms=4, lw=1, capsize=2, color=f"C{i}",
                            label={"rules": "conversion rules", "pruning": "pruning", "planner": "planner's choices"}
                            [method])
        ax.set_xlabel(f"latency, {cell} (ms, {result['img_size']} px)")
        ax.set_ylabel("test top-1 % (fine-tuned)")
        ax.set_title(f"{result['model']} {result['img_size']} px, Fashion-MNIST{budget_tag(result, ', budget ')}",
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        slug = re.sub(r"[^A-Za-z0-9]+", "-", cell).strip("-").lower()
        tag = budget_tag(result, "-budget").rstrip("%")
        path = folder / f"frontier-{result['model']}-{result['img_size']}px{tag}-{slug}.png"
        fig.savefig(path, format="png", dpi=100)
        plt.close(fig)
        paths.append(str(path))
    return paths


def selected(name: str, patterns: list[str] | None) -> bool:
    """Whether ``--only`` lets this run fine-tune candidate ``name``: no patterns, an exact name, or a prefix that
    ends with ``*`` (``"plan@*"``, ``"prune *"``)."""
    if not patterns:
        return True
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: [m for m in t.split(",") if m], default=["resnet26"],
                        help="from-scratch originals of examples/fashion_mnist/run.py (comma-separated)")
    parser.add_argument("--teacher", default=None, help="NAME=WEIGHTS.safetensors: a pretrained original (10 classes)")
    parser.add_argument("--teacher-images", type=int, default=None, help="images the --teacher was trained on")
    parser.add_argument("--size", type=int, default=None, help="input size (default: the pipeline's; 64 for --teacher)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=Path("runs/frontier"))
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",") if v], default=[0])
    parser.add_argument("--budget-share", type=float, default=BUDGET_SHARE,
                        help="fine-tune images per candidate / the original's training images")
    parser.add_argument("--prune-ratios", type=floats, default=[0.2, 0.35, 0.5])
    parser.add_argument("--prune-importance", choices=PRUNE_IMPORTANCES, default="l1",
                        help="which channels pruning removes (the pruning candidates' and the planner's): l1, or "
                             "Torch-Pruning's group norm over coupled layers")
    parser.add_argument("--prune-global", action="store_true",
                        help="rank all layers' channels together (one global ratio, no layer above 0.8)")
    parser.add_argument("--targets", type=floats, default=[0.8, 0.65, 0.5], help="latency targets of the planner")
    parser.add_argument("--proxy-images", type=int, default=2048)
    parser.add_argument("--proxy-lrs", type=floats, default=[],
                        help="also score every candidate with the proxy at these peak learning rates and give the rank "
                             "correlation of each (the proxy's default rate is the fine-tune's, 1e-3)")
    parser.add_argument("--plan-prune-ratios", type=floats, default=None,
                        help="pruning ratios the planner tries (default: --prune-ratios)")
    parser.add_argument("--original-images", type=int, default=12000,
                        help="from-scratch originals: training images per epoch (the example's default)")
    parser.add_argument("--original-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=None,
                        help="peak learning rate of every fine-tune (default: the fine-tune's probe chooses)")
    parser.add_argument("--max-rule-candidates", type=int, default=None, help="keep only the first N rule candidates")
    parser.add_argument("--per-rule-candidates", type=int, default=None,
                        help="keep only the first N candidates of each rule (the whole model, then stage 0, 1...)")
    parser.add_argument("--backends", type=lambda t: t.split(","), default=["cpu", "ort"])
    parser.add_argument("--batch-sizes", type=lambda t: [int(v) for v in t.split(",") if v], default=[1])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--plan-runs", type=int, default=10)
    parser.add_argument("--plan-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch / ORT threads (default: torch's)")
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--calib-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--note", default="", help="a paragraph for the page (what this run leaves out)")
    parser.add_argument("--with-results", type=Path, nargs="*", default=[],
                        help="OUT/frontier.json of other runs (their own models and settings): tabled after this run's")
    parser.add_argument("--only-cached", action="store_true", help="table only the fine-tunes already cached")
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME",
                        help="fine-tune only these candidates (exact names, or prefixes ending in '*': 'plan@*'); the "
                             "others are tabled from the cache where they are in it (e.g. more seeds for some cells)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few hundred images, tiny budgets")
    add_docs_flag(parser, page="frontier")
    args = parser.parse_args(argv)
    if args.quick:
        args.val_images, args.test_images, args.calib_images = 64, 64, 32
        args.proxy_images, args.runs, args.max_seconds, args.plan_runs, args.plan_seconds = 32, 3, 2.0, 3, 1.0
        args.prune_ratios, args.targets = args.prune_ratios[:1], [0.8]
        args.batch_size = 32
    if args.plan_prune_ratios is None:
        args.plan_prune_ratios = args.prune_ratios
    missing = [str(p) for p in args.with_results if not p.is_file()]
    if missing:
        parser.error(f"--with-results: no such file: {', '.join(missing)} (a frontier run writes OUT/frontier.json)")
    if args.teacher and not args.teacher_images:
        parser.error("--teacher needs --teacher-images N (the images it was trained on: the budget's base)")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine = describe_machine(machine_info(args.threads)) + ov_int8_precision(args.backends)
    started = time.perf_counter()
    originals = [] if args.teacher else [load_original(args, m) for m in args.models]
    if args.teacher:
        name, _, weights = args.teacher.partition("=")
        if not Path(weights).is_file():
            raise SystemExit(f"--teacher {args.teacher!r}: expected NAME=WEIGHTS with an existing file")
        size = args.size or 64
        originals.append(Original(name, Path(weights), size, args.teacher_images,
                                  f"{name} ({Path(weights).name}, pretrained, {size} px)"))
    results, sections, plots_dir = [], [], RESULTS_DIR if args.write_docs else args.out
    for original in originals:
        result = Frontier(args, original).run()
        results.append(result)
        sections.append(markdown(result, plot(result, plots_dir)))
        sys.stdout.write(sections[-1] + "\n")
    for path in args.with_results:  # other runs' tables (their own settings), on the same page
        for result in json.loads(path.read_text())["results"]:
            result.setdefault("source", str(path))
            results.append(result)
            sections.append(markdown(result, plot(result, plots_dir)))
            sys.stdout.write(sections[-1] + "\n")
    budgets = budget_table(results)
    if budgets:
        sections.append("\n".join(budgets))
        sys.stdout.write(sections[-1] + "\n")
    machine += f"; {time.perf_counter() - started:.0f} s this run"
    sys.stdout.write(f"Machine: {machine}\n")
    (args.out / "frontier.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    if args.write_docs:
        write_page(args.docs_page,
                   "The accuracy-latency frontier: conversion rules, pruning, the planner (Fashion-MNIST)",
                   "\n".join(sections), machine, (args.note + "\n\n" if args.note else "") + NOTES)
    return results


NOTES = """Latency ratios are side by side in one run (the original and every candidate in the same interleaved
rounds); the machine line gives the load when that timing started, and the note above says how quiet it was. A cell
marked missing was not run (its fine-tune or timing is not in the cache)."""


if __name__ == "__main__":
    main()
