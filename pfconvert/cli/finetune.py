"""``pfconvert finetune``: recover a converted model's accuracy by distillation from its original model.

The command's options are generated from the settings of
:class:`~pfconvert.recover.finetune.config.FinetuneConfig`: one flag per field (``--batch-size`` for ``batch_size``,
``--ema/--no-ema`` for a bool), its help the field's description and default. Only the flags a user gives override
the config (or the saved config on ``--resume``). :data:`PANELS` groups them in ``--help``; a field missing from it
fails at import, so a new config field cannot go without a flag.

The fields are the rows of :data:`pfconvert.recover.finetune.settings.SETTINGS`, the table ``FinetuneConfig`` is
built from; that module imports neither pydantic nor torch, which would double the command line's start-up time.
"""

from __future__ import annotations

import inspect
import time
import typing
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import TrainingError
from ..recover.finetune.settings import settings
from . import _options as o
from ._console import err_console, out_console
from .app import INTERRUPTED, app, on_interrupt

if TYPE_CHECKING:
    from ..recover.finetune.results import FinetuneResult

__all__ = ["PANELS", "FLAGS", "ALIASES", "SIZE_FIELDS", "FIELDS", "flag_of", "finetune_command", "render_result"]

PANELS: dict[str, tuple[str, ...]] = {
    "Data": ("data", "img_size", "augment", "val_split", "limit_train", "limit_val", "workers"),
    "Training": ("epochs", "train_images", "batch_size", "opt", "lr", "lr_probe_images", "weight_decay", "momentum",
                 "sched", "warmup_share", "warmup_epochs", "warmup_lr", "min_lr", "grad_clip", "ema", "ema_decay",
                 "bn_recalib_images", "reconstruct_images", "block_steps", "block_lr", "freeze_bn"),
    "Distillation": ("temperature", "kd_weight", "task_weight", "feature_weight", "smoothing", "eval_teacher"),
    "Run": ("seed", "device", "amp", "channels_last", "compile", "compile_backend", "max_steps", "log_every",
            "eval_every", "val_every"),
}
"""Help panel of each config field."""
FLAGS: dict[str, str] = {"img_size": "--input-size"}
"""The flag of a field whose flag is not its name (one name per concept across the commands)."""
ALIASES: dict[str, str] = {"img_size": "--img-size", "task_weight": "--ce-weight"}
"""The deprecated flag of a field: still read for one release, with a warning naming the new one; hidden from
``--help``."""
SIZE_FIELDS = frozenset({"img_size"})
"""Fields given as an input size (N, or C,N,N: :func:`pfconvert.cli._options.side_size`)."""

FIELDS = settings()
"""The config's settings by name: one flag each."""
_missing = set(FIELDS) ^ {name for names in PANELS.values() for name in names}
if _missing:
    raise RuntimeError(f"FinetuneConfig fields and the finetune command's PANELS differ: {sorted(_missing)}")


def flag_of(field: str) -> str:
    """The command-line flag of a config field (``batch_size`` -> ``--batch-size``; ``img_size`` ->
    ``--input-size``)."""
    return FLAGS.get(field) or "--" + field.replace("_", "-")


def _alias_param(field: str) -> str:
    """The command's parameter of a field's deprecated flag (``--ce-weight`` -> ``deprecated_ce_weight``)."""
    return "deprecated_" + ALIASES[field][2:].replace("-", "_")


def _cli_type(annotation: Any) -> tuple[type, str]:
    """The click-facing type of a field (Optional stripped; a Literal becomes str) and extra help text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str, f" One of: {', '.join(map(str, typing.get_args(annotation)))}."
    if args and typing.get_origin(annotation) is not typing.Literal:
        return _cli_type(args[0])
    return annotation, ""


def _option(name: str, panel: str) -> inspect.Parameter:
    field = FIELDS[name]
    kind, extra = _cli_type(field.type)
    if name in SIZE_FIELDS:
        kind, extra = str, " Give N, or C,N,N with the model's channels C."
    text = field.description or name
    text = text[0].upper() + text[1:]
    if not field.required and "(default:" not in text:  # a description may say what its default means
        default = "off" if field.default is None or field.default is False else \
            "on" if field.default is True else field.default  # by identity: 1.0 == True and 0 == False
        text += f" (default: {default})."
    flag = flag_of(name)
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    option = typer.Option(*decls, help=text + extra, rich_help_panel=panel, show_default=False,
                          callback=o.finite if kind is float else None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], option])  # type: ignore[valid-type]


def _deprecated_option(name: str) -> inspect.Parameter:
    """The hidden option of a field's deprecated flag (:data:`ALIASES`)."""
    kind = str if name in SIZE_FIELDS else _cli_type(FIELDS[name].type)[0]
    option = typer.Option(ALIASES[name], hidden=True, help=f"Deprecated name of {flag_of(name)}.",
                          callback=o.finite if kind is float else None)
    return inspect.Parameter(_alias_param(name), inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], option])  # type: ignore[valid-type]


def _given(artifact: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config values of the flags given: a deprecated flag's value under its field (with a warning; refused
    next to the new flag), an input size as its side."""
    values = dict(overrides)
    old = {name: values.pop(_alias_param(name)) for name in ALIASES}
    for name in ALIASES.keys() - SIZE_FIELDS:
        values[name] = o.renamed(ALIASES[name], old[name], flag_of(name), values.get(name))
    for name in SIZE_FIELDS:  # --input-size, or --img-size (side_size warns for it)
        values[name] = o.artifact_side(o.side_size(values.get(name), old.get(name)), artifact)
    return values


def _command_parameters() -> list[inspect.Parameter]:
    """The command's signature: ARTIFACT, one option per config field, then the run controls."""
    run = "Run"
    params = [inspect.Parameter("artifact", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=o.ArtifactArg)]
    params += [_option(name, panel) for panel, names in PANELS.items() for name in names]
    params += [_deprecated_option(name) for name in ALIASES]
    controls: list[tuple[str, Any, bool]] = [
        ("resume", Annotated[bool, typer.Option("--resume", help="Continue the run saved in ARTIFACT/checkpoints/"
                                                "last.pt exactly.", rich_help_panel=run)], False),
        ("overwrite", Annotated[bool, typer.Option("--overwrite", help="Discard an earlier run's checkpoints and "
                                                   "fine-tuned weights.", rich_help_panel=run)], False),
        ("report", Annotated[bool, typer.Option("--report", help="After training, measure latency of the original "
                                                "and the fine-tuned model and print the efficiency report (with "
                                                "accuracies).", rich_help_panel=run)], False),
        ("json_out", o.JsonOpt, False),
        ("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or epoch lines; warnings and "
                                               "errors are still shown.")], False),
    ]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
               for name, annotation, default in controls]
    return params


def finetune_command(artifact: Path, *, resume: bool = False, overwrite: bool = False, report: bool = False,
                     json_out: bool = False, quiet: bool = False, **overrides: Any) -> None:
    """Fine-tune a converted model with knowledge distillation from its original model.

    Writes into ARTIFACT: checkpoints/last.pt and best.pt, finetuned.safetensors (what `pfconvert.load` uses),
    metrics.jsonl and finetune.json.

    Ctrl-C saves a checkpoint; continue with --resume.

    Multi-GPU or multi-node: `torchrun --nproc_per_node N -m pfconvert finetune ARTIFACT ...`.
    """
    from ..recover.dist import env_rank
    from ..recover.finetune.api import finetune, resume_config
    from ..recover.finetune.config import make_config
    from .progress import RichReporter

    overrides = _given(artifact, overrides)
    on_interrupt(_interrupt_note(artifact, time.time()))
    notes: list[str] = []
    if resume:
        config = resume_config(artifact, **overrides)
    elif overrides.get("data") is None:
        raise TrainingError("--data is required (an ImageFolder dir, an IDX dir, or fashion-mnist)")
    else:
        from ..recover.finetune.recipes import family_defaults

        family, defaults = family_defaults(artifact, overrides.get("train_images"))
        applied = {k: v for k, v in defaults.items() if overrides.get(k) is None}
        if overrides.get("reconstruct_images") == 0:  # block steps train on the reconstruction images: none asked
            applied.pop("block_steps", None)
        if applied:
            flags = " ".join(flag_of(k) if v is True else f"{flag_of(k)} {v}" for k, v in applied.items())
            notes.append(f"{family} conversion: fine-tuning with {flags} (this family's measured best recipe; a flag "
                         "you give overrides it)")
        config = make_config(**{**overrides, **applied})
    if overrides.get("warmup_epochs") is not None:
        notes.append("--warmup-epochs is deprecated: it counts whole passes over the training split, whatever the "
                     "budget; --warmup-share sets the warm-up as a share of the run's updates")
    result = finetune(artifact, config, resume=resume, overwrite=overwrite,
                      reporter=RichReporter(err_console, quiet=quiet), notes=notes)
    if env_rank() == 0:  # under torchrun only rank 0 prints the summary
        if json_out:
            out_console.print_json(o.json_text(result.to_dict(), default=str))
        else:
            out_console.print(render_result(result))
        if report and result.status != "interrupted":
            _print_report(artifact, result)
    if result.status == "interrupted":
        raise typer.Exit(INTERRUPTED)  # the conventional code of a run stopped by Ctrl-C (its checkpoint is saved)


def _interrupt_note(artifact: Path, started: float) -> Callable[[], str]:
    """What a fine-tune stopped by Ctrl-C leaves: this run's checkpoint (resumable), an earlier run's, or none."""

    def note() -> str:
        from ..recover.finetune.checkpoint import CHECKPOINT_DIR, LAST_FILE

        last = artifact / CHECKPOINT_DIR / LAST_FILE
        if last.is_file() and last.stat().st_mtime >= started:
            return f"fine-tuning stopped; its checkpoint {last} is kept: continue with `pfconvert finetune {artifact} " \
                   "--resume`"
        if last.is_file():
            return (f"fine-tuning stopped before its first checkpoint; the earlier checkpoint {last} is untouched "
                    f"(continue it with `pfconvert finetune {artifact} --resume`)")
        return "fine-tuning stopped before its first checkpoint; nothing to resume and nothing else written: run the " \
               "same command again"

    return note


finetune_command.__signature__ = inspect.Signature(_command_parameters())  # type: ignore[attr-defined]
finetune_command.__annotations__ = {p.name: p.annotation for p in finetune_command.__signature__.parameters.values()}
app.command("finetune")(finetune_command)


def _print_report(artifact: Path, result: FinetuneResult) -> None:
    """The efficiency report of the original vs. the fine-tuned model, with their validation top-1."""
    from ..conversion.artifact import load_artifact
    from ..conversion.original import load_original
    from ..report.run import run_report
    from ._report_render import render_report

    loaded = load_artifact(artifact)
    teacher = load_original(artifact)  # fed as fine-tuned: finetune.json is written by now
    accuracies = (result.start.teacher.top1 if result.start.teacher else None,
                  (result.best or {}).get("val_top1"))
    with err_console.status("measuring latency...") as status:
        rep = run_report(teacher.model.eval(), loaded.model.eval(), input_size=teacher.data_config.input_size,
                         accuracies=accuracies, progress=lambda text: status.update(escape(text)))
    out_console.print(render_report(rep))


def _accuracy(top1: float | None, top5: float | None) -> str:
    return "-" if top1 is None else f"{top1:.2f}% / {top5:.2f}%"


def render_result(result: FinetuneResult) -> Table:
    """The run summary as a two-column table (accuracies are top-1 / top-5 on the val split, which chose the best
    epoch; `pfconvert eval` reports the test split)."""
    table = Table(title=f"fine-tuning {result.status} (accuracies: val top-1 / top-5; test: `pfconvert eval`)",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    start = result.start
    rows = [
        ("artifact", result.artifact),
        ("steps", f"{result.global_step}/{result.total_steps} ({result.epochs_done}/{result.epochs} epochs)"),
        ("device", f"{result.device}, {result.precision}, {result.world_size} process(es)"),
        *((split, text) for split, text in result.splits.items()),
    ]
    for label, acc in (("teacher (original)", start.teacher), ("student as converted", start.converted),
                       ("student after reconstruction", start.reconstructed),
                       ("student after BN re-estimation", start.recalibrated)):
        if acc is not None or label in ("teacher (original)", "student as converted"):
            rows.append((label, _accuracy(acc.top1, acc.top5) if acc else "-"))
    best = result.best
    where = (f" (step {best['step']}, epoch {best['epoch']})" if best and best.get("event") == "val" else
             f" (epoch {best['epoch']})" if best and best["epoch"] else " (the start)" if best else "")
    best_label = "best" + where
    choice = result.lr_choice.get("method")
    if result.lr is not None:
        how = {"given": "--lr", "probe": "chosen by the probe", "default": "the default"}.get(choice or "", "")
        rows.append(("learning rate", f"{result.lr:.1e}" + (f" ({how})" if how else "")))
    rows += [
        (best_label, _accuracy(best["val_top1"], best["val_top5"]) if best else "-"),
        ("final", _accuracy(result.final["val_top1"], result.final["val_top5"]) if result.final else "-"),
        ("training", f"{result.train_seconds:.1f} s, {result.images_per_s:.1f} images/s"),
        ("fine-tuned weights", result.finetuned_weights or "-"),
        ("checkpoint", result.checkpoint or "-"),
        ("metrics log", result.metrics_log or "-"),
    ]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    return table
