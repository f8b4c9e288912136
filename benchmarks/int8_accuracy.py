"""Accuracy after int8: top-1 of the original and the converted model in PyTorch (fp32) and as deployed on each CPU
runtime (OpenVINO fp32, OpenVINO int8 by NNCF post-training quantization, ONNX Runtime int8 by static QDQ), side by
side, on the test split of the data each model was fine-tuned on.

Each case is a fine-tuned artifact (``pfconvert convert`` then ``pfconvert finetune``); its original is rebuilt from
the artifact's recipe (:func:`pfconvert.load_original`), so the original and the converted model are deployed the
same way, and both int8 models are calibrated on the same training images (``--calib-images``, never the val or
test split; :func:`pfconvert.study.deployed.data_deployer`). This is ``pfconvert eval ART --original --backend
ov,ov-int8,ort-int8`` for each case, tabulated. The speed of the same runtimes is benchmarks/deploy_cpu.py's.

    python benchmarks/int8_accuracy.py --case "resnet26 r50-max, 32 px=runs/fm/resnet26/r50-max" \\
        --case "lite1 maxpool, 64 px=runs/rec/lite1-64/efficientnet_lite1/maxpool/0.3x-default" --write-docs

``--max-drop D`` adds a column: OpenVINO int8 with NNCF's accuracy-aware quantization (``pfconvert eval --backend
ov-int8 --int8-max-drop D``), layers put back in fp32 until the drop on 1,000 val images is at most D points.

Results are cached per case in OUT/<case>.json (``--reuse`` keeps them), so cases can be added one run at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from pfconvert.deploy.quantize import KEEP_FP32
from pfconvert.deploy.runtime import RUNTIME_LABELS, check_runtimes
from pfconvert.errors import BackendError
from pfconvert.study.deployed import data_deployer
from pfconvert.recover.finetune.api import evaluate_artifact
from pfconvert.report.machine import describe_machine, machine_info

try:
    from ._results import add_docs_flag, ov_int8_precision, write_page  # as benchmarks.NAME (tests)
except ImportError:
    from _results import add_docs_flag, ov_int8_precision, write_page  # run as a script: its directory is sys.path[0]

TOLERANCE = 0.5  # the target: int8 top-1 within this many points of fp32
QUANTIZATION = "ort-u8s8"  # what the int8 paths are; a cached row made by other paths is evaluated again
CONTROLLED = "ov-int8 controlled"  # the column key of --max-drop


def columns(runtimes: list[str], max_drop: float | None) -> list[tuple[str, str]]:
    """(key, label) of each deployed column: the runtimes, then the accuracy-controlled OpenVINO int8 one."""
    out = [(r, RUNTIME_LABELS[r]) for r in runtimes]
    if max_drop is not None:
        out.append((CONTROLLED, f"{RUNTIME_LABELS['ov-int8']}, accuracy-controlled to {max_drop:g}"))
    return out


def slug(text: str) -> str:
    """A file name for a case label."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def evaluate_case(label: str, artifact: Path, args: argparse.Namespace) -> dict:
    """One case's row: the eval report of the artifact with its original, on every runtime."""
    cache = args.out / f"{slug(label)}.json"
    if args.reuse and cache.is_file():
        row = json.loads(cache.read_text())
        key = ("artifact", "runtimes", "keep_fp32", "quantization", "max_drop")
        if tuple(row.get(k) for k in key) == (str(artifact), args.runtimes, KEEP_FP32, QUANTIZATION, args.max_drop):
            print(f"{label}: reused {cache}", file=sys.stderr)
            return row

    def note(line: str) -> None:
        print(f"{label}: {line}", file=sys.stderr)

    start = time.perf_counter()
    plain = data_deployer(args.runtimes, args.data, args.calib_images, on_note=note)
    controlled = data_deployer(["ov-int8"], args.data, args.calib_images, on_note=note, max_drop=args.max_drop,
                               control_images=args.control_images) if args.max_drop is not None else None

    def deploy(name: str, model, data_cfg) -> list:
        return plain(name, model, data_cfg) + (controlled(name, model, data_cfg) if controlled else [])

    report = evaluate_artifact(artifact, args.data, split="test", original=True, limit=args.limit,
                               workers=args.workers, device="cpu", deploy=deploy,
                               on_note=lambda line: print(f"{label}: {line}", file=sys.stderr))
    row = {"case": label, "artifact": str(artifact), "runtimes": args.runtimes, "keep_fp32": KEEP_FP32,
           "quantization": QUANTIZATION, "max_drop": args.max_drop, "calib_images": args.calib_images,
           "split": report.split_description or report.split, "input_size": list(report.input_size),
           "weights": report.weights, "top1": {k: round(v.top1, 2) for k, v in report.metrics.items()},
           "count": next(iter(report.metrics.values())).count, "seconds": round(time.perf_counter() - start)}
    args.out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=2))
    return row


def markdown(rows: list[dict], runtimes: list[str], max_drop: float | None = None) -> str:
    """The table: one line per case and model; fp32 (PyTorch) then each runtime, and each int8 runtime's change."""
    cols = columns(runtimes, max_drop)
    int8 = [(key, label) for key, label in cols if "int8" in key]
    head = ["case", "model", "PyTorch fp32", *(label for _, label in cols), *(f"{key} - fp32" for key, _ in int8)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts: dict[str, dict[tuple, bool]] = {key: {} for key, _ in int8}
    for row in rows:
        top1 = row["top1"]
        for model, name in (("original", "original"), ("student", "converted")):
            fp32 = top1[model]
            cells = [row["case"], name, f"{fp32:.2f}"]
            values = tuple(top1[f"{model} on {label}"] for _, label in cols)
            cells += [f"{value:.2f}" for value in values]
            for key, label in int8:
                delta = top1[f"{model} on {label}"] - fp32
                cells.append(f"{delta:+.2f}")
                # one verdict per distinct model: an original shared by two cases scores the same in both
                verdicts[key][(model, fp32, values)] = abs(delta) <= TOLERANCE
            lines.append("| " + " | ".join(cells) + " |")
    detail = [f"- {row['case']}: {row['count']} images of {row['split']}, "
              f"input {'x'.join(map(str, row['input_size']))}, "
              f"student weights {Path(row['weights']).name}, int8 calibrated on {row['calib_images']} training images, "
              f"{row['seconds']} s" for row in rows]
    summary = (f"int8 within {TOLERANCE} point of fp32 (PyTorch) top-1, per int8 column, over the distinct models (an "
               "original shared by two cases counted once): "
               + "; ".join(f"{label}: {sum(v.values())} of {len(v)}" for (key, label) in int8
                           for v in [verdicts[key]]) + ".")
    how = ("int8 as pfconvert deploys it: NNCF post-training quantization with full bias correction (OpenVINO), "
           "ONNX Runtime static QDQ (per-channel int8 weights, uint8 activations, MinMax); both keep the first and "
           f"the last weighted layer in fp32 ({'on' if KEEP_FP32 else 'off'}: pfconvert.deploy.quantize.KEEP_FP32).")
    if max_drop is not None:
        how += (f" The accuracy-controlled column is NNCF's quantize_with_accuracy_control with max_drop {max_drop:g} "
                "(absolute top-1 points) measured on val images (carved from the training images), never the test "
                "split.")
    return "\n".join(["Top-1 % on the test split.", "", *lines, "", summary, "", how, "", *detail])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, metavar="LABEL=ARTIFACT",
                        help="a fine-tuned artifact and its label (repeat)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--runtimes", type=lambda t: t.split(","), default=["ov", "ov-int8", "ort-int8"])
    parser.add_argument("--calib-images", type=int, default=300, help="int8 calibration images (pfconvert's default)")
    parser.add_argument("--limit", type=int, default=None, help="test images (default: the whole test split)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/int8_accuracy"))
    parser.add_argument("--reuse", action="store_true", help="keep the cases an earlier call evaluated in OUT")
    parser.add_argument("--max-drop", type=float, default=None, metavar="D",
                        help="add OpenVINO int8 with NNCF's accuracy control at this drop (top-1 points)")
    parser.add_argument("--control-images", type=int, default=1000, help="--max-drop: val images")
    parser.add_argument("--notes", type=Path, default=None, metavar="FILE.md",
                        help="Markdown appended to the page (the reading, the load, what was not run)")
    add_docs_flag(parser)
    args = parser.parse_args(argv)
    try:
        check_runtimes(args.runtimes, "--runtimes")
    except BackendError as exc:
        parser.error(str(exc))
    cases = []
    for text in args.case:
        label, sep, path = text.rpartition("=")
        if not sep or not label or not Path(path).is_dir():
            parser.error(f"--case {text!r}: give LABEL=ARTIFACT_DIR (an existing artifact folder)")
        cases.append((label, Path(path)))
    start = time.perf_counter()
    rows = [evaluate_case(label, path, args) for label, path in cases]
    table = markdown(rows, args.runtimes, args.max_drop)
    machine = describe_machine(machine_info(None)) + ov_int8_precision(args.runtimes)
    machine += f", {time.perf_counter() - start:.0f} s total, {time.strftime('%Y-%m-%d')}"
    sys.stdout.write(f"Machine: {machine}\n\n{table}\n")
    if args.write_docs:
        write_page("int8-accuracy", "Accuracy after int8: original and converted, fp32 and int8", table, machine,
                   args.notes.read_text() if args.notes else "")
    return table


if __name__ == "__main__":
    main()
