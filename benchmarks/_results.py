"""Results pages: a benchmark run with ``--write-docs`` writes its table to ``docs/results/<name>.md``, stamped with
the exact command, the machine, the library versions and the date. The README links these pages; nobody edits them
by hand. Also the argument types the benchmark scripts share."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

from pfconvert._files import write_text

__all__ = ["RESULTS_DIR", "add_docs_flag", "int_list", "ov_int8_precision", "write_page"]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "results"


def int_list(text: str) -> list[int]:
    """``"1,32"`` -> ``[1, 32]``: the type of a comma-separated ``--batch-sizes`` option."""
    return [int(v) for v in text.split(",") if v]


PAGE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
"""A results page's name: lower-case letters, digits and '-' (no path)."""


def _page_name(text: str) -> str:
    """``--docs-page``'s type: refused when the run starts, not after it."""
    if not PAGE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a page name (lower-case letters, digits and '-', e.g. "
                                         "deploy-cpu-xeon)")
    return text


def ov_int8_precision(backends: list[str] | tuple[str, ...]) -> str:
    """For the machine line of a page with the ``ov-int8`` backend: the precision OpenVINO runs an int8 model's
    floating-point layers at on this CPU (its default: bf16 with native bf16, such as AMX; f32 elsewhere), "" when
    ``ov-int8`` is not among ``backends``."""
    if "ov-int8" not in backends:
        return ""
    from pfconvert.deploy.openvino import default_precision

    return f", OpenVINO int8 models' float layers in {default_precision()} (OpenVINO's default on this CPU)"


def add_docs_flag(parser: object, page: str | None = None) -> None:
    """``--write-docs``: also write the results page (off by default, so a partial run never replaces it). With
    ``page`` (the default page's name), also ``--docs-page NAME``: write ``docs/results/NAME.md`` instead, so that a
    run on another machine (another CPU, another ISA) is kept beside the default page rather than replacing it."""
    parser.add_argument("--write-docs", action="store_true",  # type: ignore[attr-defined]
                        help=f"also write the table to {RESULTS_DIR.relative_to(RESULTS_DIR.parents[1])}/")
    if page is not None:
        parser.add_argument("--docs-page", default=page, metavar="NAME", type=_page_name,  # type: ignore[attr-defined]
                            help=f"with --write-docs: the page's name (default {page}); another name keeps this "
                                 "machine's run beside the default page")


def write_page(name: str, title: str, body: str, machine: str, notes: str = "") -> Path:
    """Write ``docs/results/<name>.md``: title, command, machine, date, then ``body`` (Markdown) and ``notes``."""
    if not PAGE_NAME.fullmatch(name):
        raise SystemExit(f"--docs-page: {name!r} is not a page name (lower-case letters, digits and '-', e.g. "
                         "deploy-cpu-xeon)")
    argv = [Path(sys.argv[0]).as_posix().split("/benchmarks/")[-1], *sys.argv[1:]]
    script = argv[0] if argv[0].startswith(("examples/", "benchmarks/")) else f"benchmarks/{argv[0]}"
    command = shlex.join(["python", script, *argv[1:]])
    page = [f"# {title}", "", "<!-- Written by the command below; run it again to refresh this page. -->", "",
            f"Command: `{command}`", "", f"Machine: {machine}", "", f"Date: {time.strftime('%Y-%m-%d')}", "",
            body.rstrip(), ""]
    if notes:
        page += [notes.rstrip(), ""]
    path = RESULTS_DIR / f"{name}.md"
    write_text(path, "\n".join(page))
    print(f"wrote {path}", file=sys.stderr)
    return path
