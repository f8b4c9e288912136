"""``pfconvert finetune``: recover a converted model's accuracy by distillation from its original model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import TrainingError
from ..finetune import FinetuneConfig, FinetuneResult, RichReporter, finetune, make_config, resume_config
from ..finetune.dist import env_rank
from . import _options as o
from ._console import err_console, out_console
from .app import app

__all__ = ["finetune_command", "render_result"]

_FIELDS = FinetuneConfig.model_fields
_TRAIN, _KD, _DATA, _RUN = "Training", "Distillation", "Data", "Run"


def _opt(name: str, flag: str, panel: str) -> Any:
    """A typer option whose help is the config field's description and default (all options default to None, so
    that only the flags a user gives override the config, or the saved config on --resume)."""
    field = _FIELDS[name]
    text = field.description or name
    text = text[0].upper() + text[1:]
    if not field.is_required():
        default = {None: "off", True: "on", False: "off"}.get(field.default, field.default)
        text += f" (default: {default})."
    return typer.Option(flag, help=text, rich_help_panel=panel, show_default=False)


@app.command("finetune")
def finetune_command(
    artifact: Annotated[Path, typer.Argument(help="Artifact directory written by `pfconvert convert`.")],
    data: Annotated[Optional[str], _opt("data", "--data", _DATA)] = None,
    epochs: Annotated[Optional[int], _opt("epochs", "--epochs", _TRAIN)] = None,
    batch_size: Annotated[Optional[int], _opt("batch_size", "--batch-size", _TRAIN)] = None,
    lr: Annotated[Optional[float], _opt("lr", "--lr", _TRAIN)] = None,
    opt: Annotated[Optional[str], _opt("opt", "--opt", _TRAIN)] = None,
    weight_decay: Annotated[Optional[float], _opt("weight_decay", "--weight-decay", _TRAIN)] = None,
    sched: Annotated[Optional[str], _opt("sched", "--sched", _TRAIN)] = None,
    warmup_epochs: Annotated[Optional[float], _opt("warmup_epochs", "--warmup-epochs", _TRAIN)] = None,
    min_lr: Annotated[Optional[float], _opt("min_lr", "--min-lr", _TRAIN)] = None,
    grad_clip: Annotated[Optional[float], _opt("grad_clip", "--grad-clip", _TRAIN)] = None,
    ema: Annotated[Optional[bool], _opt("ema", "--ema/--no-ema", _TRAIN)] = None,
    bn_recalib_batches: Annotated[Optional[int], _opt("bn_recalib_batches", "--bn-recalib-batches", _TRAIN)] = None,
    reconstruct_images: Annotated[Optional[int], _opt("reconstruct_images", "--reconstruct-images", _TRAIN)] = None,
    freeze_bn: Annotated[Optional[bool], _opt("freeze_bn", "--freeze-bn/--no-freeze-bn", _TRAIN)] = None,
    temperature: Annotated[Optional[float], _opt("temperature", "--temperature", _KD)] = None,
    kd_weight: Annotated[Optional[float], _opt("kd_weight", "--kd-weight", _KD)] = None,
    task_weight: Annotated[Optional[float], _opt("task_weight", "--ce-weight", _KD)] = None,
    smoothing: Annotated[Optional[float], _opt("smoothing", "--smoothing", _KD)] = None,
    img_size: Annotated[Optional[int], _opt("img_size", "--img-size", _DATA)] = None,
    augment: Annotated[Optional[str], _opt("augment", "--augment", _DATA)] = None,
    limit_train: Annotated[Optional[int], _opt("limit_train", "--limit-train", _DATA)] = None,
    limit_val: Annotated[Optional[int], _opt("limit_val", "--limit-val", _DATA)] = None,
    workers: Annotated[Optional[int], _opt("workers", "--workers", _DATA)] = None,
    seed: Annotated[Optional[int], _opt("seed", "--seed", _RUN)] = None,
    device: Annotated[Optional[str], _opt("device", "--device", _RUN)] = None,
    amp: Annotated[Optional[bool], _opt("amp", "--amp/--no-amp", _RUN)] = None,
    channels_last: Annotated[Optional[bool], _opt("channels_last", "--channels-last/--no-channels-last", _RUN)] = None,
    compile_model: Annotated[Optional[bool], _opt("compile", "--compile/--no-compile", _RUN)] = None,
    max_steps: Annotated[Optional[int], _opt("max_steps", "--max-steps", _RUN)] = None,
    log_every: Annotated[Optional[int], _opt("log_every", "--log-every", _RUN)] = None,
    eval_every: Annotated[Optional[int], _opt("eval_every", "--eval-every", _RUN)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in ARTIFACT/checkpoints/last.pt "
                                         "exactly.", rich_help_panel=_RUN)] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard an earlier run's checkpoints and fine-tuned "
                                            "weights.", rich_help_panel=_RUN)] = False,
    report: Annotated[bool, typer.Option("--report", help="After training, measure latency of the original and the "
                                         "fine-tuned model and print the efficiency report (with accuracies).",
                                         rich_help_panel=_RUN)] = False,
    json_out: o.JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or epoch lines; warnings and "
                                        "errors are still shown.")] = False,
) -> None:
    """Fine-tune a converted model with knowledge distillation from its original model.

    Writes into ARTIFACT: checkpoints/last.pt and best.pt, finetuned.safetensors (what `pfconvert.load` uses),
    metrics.jsonl and finetune.json.

    Ctrl-C saves a checkpoint; continue with --resume.

    Multi-GPU or multi-node: `torchrun --nproc_per_node N -m pfconvert finetune ARTIFACT ...`.
    """
    overrides = dict(
        data=data, epochs=epochs, batch_size=batch_size, lr=lr, opt=opt, weight_decay=weight_decay, sched=sched,
        warmup_epochs=warmup_epochs, min_lr=min_lr, grad_clip=grad_clip, ema=ema,
        bn_recalib_batches=bn_recalib_batches, reconstruct_images=reconstruct_images, freeze_bn=freeze_bn,
        temperature=temperature, kd_weight=kd_weight, task_weight=task_weight,
        smoothing=smoothing, img_size=img_size, augment=augment, limit_train=limit_train, limit_val=limit_val,
        workers=workers, seed=seed, device=device, amp=amp, channels_last=channels_last, compile=compile_model,
        max_steps=max_steps, log_every=log_every, eval_every=eval_every,
    )
    if resume:
        config = resume_config(artifact, **overrides)
    elif data is None:
        raise TrainingError("--data is required (an ImageFolder dir, an IDX dir, or fashion-mnist)")
    else:
        config = make_config(**overrides)
    reporter = RichReporter(err_console, quiet=quiet)
    result = finetune(artifact, config, resume=resume, overwrite=overwrite, reporter=reporter)
    if env_rank() == 0:  # under torchrun only rank 0 prints the summary
        if json_out:
            out_console.print_json(json.dumps(result.as_dict(), default=str))
        else:
            out_console.print(render_result(result))
        if report and result.status != "interrupted":
            _print_report(artifact, result)
    if result.status == "interrupted":
        raise SystemExit(130)  # the conventional code of a run stopped by Ctrl-C (its checkpoint is saved)


def _print_report(artifact: Path, result: Any) -> None:
    """The efficiency report of the original vs. the fine-tuned model, with their validation top-1."""
    from ..artifact import build_original, load_artifact
    from ..report import render_report, run_report

    loaded = load_artifact(artifact)
    teacher = build_original(loaded.recipe, artifact).eval()
    accuracies = ((result.start.get("teacher") or {}).get("top1"), (result.best or {}).get("val_top1"))
    with err_console.status("measuring latency...") as status:
        rep = run_report(teacher, loaded.model.eval(), input_size=tuple(loaded.recipe.input_size),
                         accuracies=accuracies, progress=status.update)
    out_console.print(render_report(rep))


def _accuracy(record: dict[str, Any] | None, prefix: str = "") -> str:
    """``top-1 / top-5`` of a metrics record, or a dash."""
    if not record:
        return "-"
    return f"{record[prefix + 'top1']:.2f}% / {record[prefix + 'top5']:.2f}%"


def render_result(result: FinetuneResult) -> Table:
    """The run summary as a two-column table (validation accuracies are top-1 / top-5)."""
    table = Table(title=f"fine-tuning {result.status}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    start = result.start
    rows = [
        ("artifact", result.artifact),
        ("steps", f"{result.global_step}/{result.total_steps} ({result.epochs_done}/{result.epochs} epochs)"),
        ("device", f"{result.device}, {result.precision}, {result.world_size} process(es)"),
        ("teacher (original)", _accuracy(start.get("teacher"))),
        ("student as converted", _accuracy(start.get("converted"))),
        ("student after reconstruction", _accuracy(start.get("reconstructed"))),
        ("student after BN re-estimation", _accuracy(start.get("recalibrated"))),
        ("best" + (f" (epoch {result.best['epoch']})" if result.best and result.best["epoch"] else
                   " (the start)" if result.best else ""), _accuracy(result.best, "val_")),
        ("final", _accuracy(result.final, "val_")),
        ("training", f"{result.train_seconds:.1f} s, {result.images_per_s:.1f} images/s"),
        ("fine-tuned weights", result.finetuned_weights or "-"),
        ("checkpoint", result.checkpoint or "-"),
        ("metrics log", result.metrics_log or "-"),
    ]
    optional = {"student after reconstruction", "student after BN re-estimation"}  # steps that may be switched off
    for key, value in rows:
        if not (key in optional and value == "-"):
            table.add_row(key, value)
    return table
