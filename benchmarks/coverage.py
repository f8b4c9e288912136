"""Coverage of the built-in rules over timm: ``maxpool`` on every model with a depthwise conv (``--suite depthwise``,
the default), or the residual-family rules on every model with a dense or grouped k x k conv inside a residual branch
(``--suite residual``: see ``benchmarks/_residual_suite.py``).

Every model of ``timm.list_models()`` is built cheaply -- on the meta device (shapes only, no compute, so the
pretrained-config input size costs nothing), or, when the model cannot build or run on meta, on the CPU at a reduced
input size -- and checked for a depthwise conv (``groups == in_channels > 1`` and ``out % in == 0`` on an
``nn.Conv2d`` subclass or timm ``CondConv2d``). Those that have one run, on the same path:

1. the original forward (a model that cannot run its own forward on any path is listed, not counted as a failure),
2. ``pfconvert.convert(model, "maxpool", input_size=...)`` (the engine traces, swaps, checks shapes, verifies),
3. a forward of the converted model: no depthwise conv may still run, the output shapes must equal the original's,
   and (CPU path) no replacement may turn a finite input into non-finite values (-inf padding leaking out).

``--paths cpu`` skips the meta device, so that values are computed (slower; use it with ``--filter``).
Models run in worker subprocesses, one model at a time each, with a per-model timeout, so one hang or crash costs only
that model. Progress goes to stderr; the summary table (and every failure with its one-line reason) to stdout.

Usage::

    python benchmarks/coverage.py                       # all timm models, 1 worker
    python benchmarks/coverage.py --suite residual      # bottleneck-max / bottleneck-hybrid / basic-max
    python benchmarks/coverage.py --filter 'mobilenet*' --limit 20 --json coverage.json
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:
    from ._results import add_docs_flag, write_page  # imported as benchmarks.coverage (tests, python -m)
except ImportError:
    from _results import add_docs_flag, write_page  # run as a script: its directory is sys.path[0]


def _residual_suite() -> Any:
    """``benchmarks/_residual_suite.py``, imported on first use (``--suite residual``)."""
    try:
        from . import _residual_suite as suite  # imported as benchmarks.coverage
    except ImportError:
        import _residual_suite as suite  # run as a script: its directory is sys.path[0]
    return suite


__all__ = ["Result", "main", "probe_model", "has_depthwise", "summarize"]

OK, ENGINE, MODEL, NO_DW, UNBUILDABLE = "ok", "engine-failure", "model-failure", "no-depthwise", "unbuildable"
NO_TARGET, NOT_REPLACEABLE = "no-target", "not-replaceable"  # the residual suite's
_CPU_MAX_PIXELS = 256 * 256  # larger pretrained input sizes are reduced on the CPU path
_CPU_SIZE = 224
_STARTUP_S = 120.0  # a fresh worker may take this long to import torch/timm before its first model


@dataclass
class Result:
    """The outcome for one model."""

    name: str
    status: str = UNBUILDABLE
    path: str = ""  # how it was built and run: 'meta', 'cpu', 'cpu@224', 'cpu img_size=224'
    input_size: list[int] = field(default_factory=list)
    depthwise: int = 0  # number of depthwise conv modules in the model (residual suite: of its targets)
    params: int = 0  # parameters of the original model
    replaced: int = 0  # number of layers the rule replaced
    phase: str = ""  # the step that failed: build, forward, convert, converted-forward
    reason: str = ""
    note: str = ""  # something worth knowing that is not a failure
    seconds: float = 0.0
    rules: dict[str, Any] = field(default_factory=dict)  # residual suite: per rule, layers replaced, params, MACs


# --------------------------------------------------------------------------------------------------- worker side


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _is_depthwise(module: Any) -> bool:
    from torch import nn

    if not (isinstance(module, nn.Conv2d) or type(module).__name__ == "CondConv2d"):
        return False
    c_in, c_out, groups = module.in_channels, module.out_channels, module.groups
    return groups == c_in > 1 and c_out % c_in == 0


def has_depthwise(model: Any) -> int:
    """Number of depthwise convs (``groups == in_channels > 1``, out a multiple of in) in ``model``."""
    return sum(1 for module in model.modules() if _is_depthwise(module))


def _pretrained_size(name: str) -> tuple[int, int, int]:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return tuple(int(v) for v in size) if size else (3, 224, 224)  # type: ignore[return-value]


def _build(name: str, device: str, kwargs: dict[str, Any]) -> Any:
    import timm
    import torch

    with torch.device(device):
        model = timm.create_model(name, pretrained=False, **kwargs)
    return model.eval()


def _forward(model: Any, size: tuple[int, int, int]) -> Any:
    import torch

    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    x = torch.randn((1, *size), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        return model(x)


def _outputs(obj: Any) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _outputs(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _outputs(item)]
    return []


def _cpu_attempts(size: tuple[int, int, int]) -> list[tuple[str, dict[str, Any], tuple[int, int, int]]]:
    """(path label, create kwargs, input size) to try on the CPU, cheapest first."""
    if size[1] * size[2] <= _CPU_MAX_PIXELS:
        return [("cpu", {}, size)]
    small = (size[0], _CPU_SIZE, _CPU_SIZE)
    return [(f"cpu@{_CPU_SIZE}", {}, small), (f"cpu img_size={_CPU_SIZE}", {"img_size": _CPU_SIZE}, small),
            ("cpu", {}, size)]


def _attempts(size: tuple[int, int, int], paths: str) -> Iterator[tuple[str, str, dict, tuple]]:
    """(path label, device, create kwargs, input size) to try, in order."""
    if paths in ("auto", "meta"):
        yield "meta", "meta", {}, size
    if paths in ("auto", "cpu"):
        for label, kwargs, s in _cpu_attempts(size):
            yield label, "cpu", kwargs, s


@dataclass
class _Reference:
    """A model that runs its own forward on some path, and what that forward gave."""

    model: Any
    size: tuple[int, int, int]
    shapes: list[tuple[int, ...]]
    finite: bool


def _all_finite(obj: Any) -> bool:
    """Whether every floating tensor in ``obj`` is finite (meta tensors count as finite: they hold no values)."""
    import torch

    return all(t.device.type == "meta" or not t.is_floating_point() or bool(torch.isfinite(t).all())
               for t in _outputs(obj))


def _shapes_and_finite(outputs: Any) -> tuple[list[tuple[int, ...]], bool]:
    return [tuple(t.shape) for t in _outputs(outputs)], _all_finite(outputs)


def _runnable(name: str, res: Result, paths: str, report: Any, suite: str = "depthwise") -> _Reference | None:
    """Build the model and run its original forward on the first path that allows both; None if none does."""
    size = _pretrained_size(name)
    errors: list[str] = []
    for label, device, kwargs, s in _attempts(size, paths):
        report("build", label)
        try:
            model = _build(name, device, kwargs)
        except Exception as exc:  # noqa: BLE001 - any build failure moves on to the next path
            errors.append(f"[{label}] build: {_one_line(exc)}")
            continue
        res.params = sum(p.numel() for p in model.parameters())
        if suite == "depthwise":
            res.depthwise = has_depthwise(model)
            res.status = NO_DW if not res.depthwise else MODEL
            if not res.depthwise:
                return None
        res.status = MODEL
        report("forward", label)
        try:
            shapes, finite = _shapes_and_finite(_forward(model, s))
        except Exception as exc:  # noqa: BLE001
            errors.append(f"[{label}] forward: {_one_line(exc)}")
            del model
            continue
        res.path, res.input_size = label, list(s)
        return _Reference(model, s, shapes, finite)
    res.phase = "build" if res.status == UNBUILDABLE else "forward"
    res.reason = "; ".join(errors)
    return None


def probe_model(name: str, paths: str = "auto", report: Any = None, suite: str = "depthwise") -> Result:
    """Build ``name``, and if it has a depthwise conv, convert it with ``maxpool`` and run the converted model (the
    residual suite: :func:`_residual_suite.probe_residual`)."""
    import pfconvert

    report = report or (lambda phase, label: None)
    start = time.perf_counter()
    res = Result(name)
    ref = _runnable(name, res, paths, report, suite)
    if ref is not None and suite == "residual":
        probe_residual = _residual_suite().probe_residual

        report("convert", res.path)
        try:
            probe_residual(ref.model, ref.size, ref.shapes, lambda m, s: _shapes_and_finite(_forward(m, s))[0], res)
            if res.status == MODEL:
                res.status, res.phase = OK, ""
        except Exception as exc:  # noqa: BLE001 - every engine error is reported, in one line
            res.status, res.reason = ENGINE, _one_line(exc)
    elif ref is not None:
        try:
            report("convert", res.path)
            res.phase = "convert"
            converted, record = pfconvert.convert(ref.model, "maxpool", input_size=ref.size, inplace=True)
            res.replaced = len(record.replacements)
            report("converted-forward", res.path)
            res.phase = "converted-forward"
            _check_converted(converted, ref, [r.path for r in record.replacements], res)
            res.status, res.phase = OK, ""
        except Exception as exc:  # noqa: BLE001 - every engine error is reported, in one line
            res.status, res.reason = ENGINE, _one_line(exc)
    res.seconds = round(time.perf_counter() - start, 2)
    return res


def _check_converted(model: Any, ref: _Reference, replaced: list[str], res: Result) -> None:
    """Forward the converted model and check it.

    Failures: a depthwise conv still runs, the output shapes changed, or (CPU) a replacement op gives non-finite values
    for a finite input (-inf padding leaking out). Non-finite model outputs alone are only noted: at random init, with
    eval-mode BNs at their initial statistics, activations after max-pools are positive-biased and can overflow
    float32 through a deep net (e.g. ghostnetv3's summed re-parameterisation branches), which is not a conversion error.
    """
    still: list[str] = []
    leaks: list[str] = []

    def leak_hook(mod: Any, args: tuple, out: Any, name: str) -> None:
        if _all_finite(args) and not _all_finite(out):
            leaks.append(name)

    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: still.append(n))
             for n, m in model.named_modules() if _is_depthwise(m)]
    hooks += [model.get_submodule(p).register_forward_hook(lambda mod, a, o, n=p: leak_hook(mod, a, o, n))
              for p in replaced]
    try:
        shapes, finite = _shapes_and_finite(_forward(model, ref.size))
    finally:
        for h in hooks:
            h.remove()
    if still:
        raise RuntimeError(f"{len(set(still))} depthwise convs still run after conversion (e.g. {still[0]})")
    if shapes != ref.shapes:
        raise RuntimeError(f"converted output shapes {shapes} != original {ref.shapes}")
    if leaks:
        raise RuntimeError(f"replacement '{leaks[0]}' gives non-finite values for a finite input")
    if ref.finite and not finite:
        res.note = "outputs overflow to non-finite values at random init (no replacement leaks -inf)"


def _worker(paths: str, threads: int, suite: str) -> None:
    """Read model names on stdin; write JSON lines (phase updates, then the result) on the original stdout."""
    import timm  # noqa: F401 - imported before the first model, so its time does not count against that model
    import torch

    import pfconvert  # noqa: F401

    torch.set_num_threads(threads)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the models print goes to the worker log, never into the result stream

    def report(phase: str, label: str) -> None:
        out.write(json.dumps({"phase": phase, "path": label}) + "\n")

    for line in sys.stdin:
        name = line.strip()
        if name:
            out.write(json.dumps({"result": asdict(probe_model(name, paths, report, suite))}) + "\n")


# --------------------------------------------------------------------------------------------------- parent side


class _Worker:
    """One worker subprocess and the model it is running."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, "-u", __file__, "--worker", "--paths", args.paths, "--threads", str(args.threads),
               "--suite", args.suite]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1)
        self.name: str | None = None
        self.phase, self.path, self.started, self.done = "", "", 0.0, 0
        self.buffer, self.dead, self.log_start = "", False, 0
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]

    def submit(self, name: str) -> None:
        self.name, self.phase, self.path, self.started = name, "start", "", time.monotonic()
        self.log.seek(0, os.SEEK_END)
        self.log_start = self.log.tell()  # what the worker writes from here on is about this model
        self.proc.stdin.write(name + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def read_lines(self) -> list[dict[str, Any]]:
        chunk = os.read(self.fd, 65536).decode()
        if not chunk:
            raise EOFError
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        return [json.loads(line) for line in lines if line.strip()]

    def log_tail(self) -> str:
        self.log.seek(self.log_start)
        lines = [ln.strip() for ln in self.log.read().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # this worker only, by its own pid
        self.proc.wait()
        self.log.close()


def _lost(worker: _Worker, why: str) -> Result:
    """The result of a model whose worker timed out or died, attributed to the phase it was in."""
    phase = worker.phase
    status = {"convert": ENGINE, "converted-forward": ENGINE, "forward": MODEL}.get(phase.split(" ")[0], UNBUILDABLE)
    tail = worker.log_tail()
    reason = f"{why} during {phase} ({worker.path or 'no path yet'})" + (f": {tail}" if tail else "")
    return Result(str(worker.name), status=status, path=worker.path, phase=phase, reason=reason,
                  seconds=round(time.monotonic() - worker.started, 2))


def _handle(worker: _Worker) -> list[Result]:
    """Read what the worker wrote: phase updates, results; a closed pipe means it died."""
    try:
        messages = worker.read_lines()
    except EOFError:
        lost = _lost(worker, f"worker died (exit {worker.proc.wait()})")
        worker.name, worker.dead = None, True
        return [lost]
    results = []
    for msg in messages:
        if "result" in msg:
            results.append(Result(**msg["result"]))
            worker.name, worker.done = None, worker.done + 1
        else:
            if worker.phase == "start":  # the clock starts when the worker begins the model (imports are done)
                worker.started = time.monotonic()
            worker.phase, worker.path = msg["phase"], msg["path"]
    return results


def run_all(names: list[str], args: argparse.Namespace) -> Iterator[Result]:
    """Run every model in worker subprocesses (``args.jobs`` at a time); yields results as they come. With
    ``args.time_budget``, no new model starts once that many seconds have passed."""
    queue = deque(names)
    workers: list[_Worker] = []
    start = time.monotonic()
    try:
        while queue or any(w.name for w in workers):
            if args.time_budget and time.monotonic() - start > args.time_budget and queue:
                print(f"time budget of {args.time_budget:.0f}s spent: {len(queue)} models not probed",
                      file=sys.stderr)
                queue.clear()
            while queue and len(workers) < args.jobs:
                workers.append(_Worker(args))
            for w in workers:
                if w.name is None and queue:
                    w.submit(queue.popleft())
            busy = {w.fd: w for w in workers if w.name}
            ready, _, _ = select.select(list(busy), [], [], 1.0)
            for fd in ready:
                yield from _handle(busy[fd])
            for w in list(workers):
                allowance = _STARTUP_S if w.phase == "start" else 0.0
                expired = bool(w.name) and time.monotonic() - w.started > args.timeout + allowance
                if expired:
                    yield _lost(w, f"timeout after {args.timeout:.0f}s")
                idle = w.name is None and (w.done >= args.recycle or not queue)
                if expired or w.dead or idle:
                    w.stop()
                    workers.remove(w)
    finally:
        for w in workers:
            w.stop()


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:5.1f}%" if d else "  n/a"


def _share(n: int, with_dw: int, runnable: int) -> str:
    return f"{_pct(n, with_dw)} of all, {_pct(n, runnable)} of runnable"


def summarize(results: list[Result], total_models: int, suite: str = "depthwise", unprobed: int = 0) -> str:
    """The summary table, then every failure with its one-line reason (engine failures first), then notes.
    ``unprobed``: selected models the time budget left out."""
    counts = Counter(r.status for r in results)
    with_dw = counts[OK] + counts[ENGINE] + counts[MODEL]
    runnable = counts[OK] + counts[ENGINE]
    rows = [
        ("timm models", total_models, ""),
        ("  probed (after --filter/--limit)", len(results), ""),
    ]
    earlier = sum(1 for r in results if r.path == "earlier run")
    if earlier:
        rows.append(("    of which found without a target by an earlier run (--known-no-target)", earlier, ""))
    if unprobed:
        rows.append(("  not probed: the time budget ran out (--time-budget)", unprobed, ""))
    rows += [
        ("  cannot be built on any path", counts[UNBUILDABLE], ""),
    ]
    if suite == "residual":
        rows += [("  without a dense/grouped k x k conv in a residual branch", counts[NO_TARGET], ""),
                 ("  with one, none a parameter-free op may replace (listed, with the reason)", counts[NOT_REPLACEABLE],
                  "")]
        target = "with a replaceable k x k conv in a residual branch"
    else:
        rows.append(("  without a depthwise conv", counts[NO_DW], ""))
        target = "with a depthwise conv"
    rows += [
        (target, with_dw, ""),
        ("  original forward fails on every path (listed, not a conversion failure)", counts[MODEL], ""),
        ("  converted + forward OK", counts[OK], _share(counts[OK], with_dw, runnable)),
        ("  failed (engine)", counts[ENGINE], _share(counts[ENGINE], with_dw, runnable)),
    ]
    lines = [f"{label:<78} {n:>6}  {extra}".rstrip() for label, n, extra in rows]
    paths = Counter(r.path for r in results if r.status in (OK, ENGINE))
    lines.append("paths used: " + ", ".join(f"{p} {n}" for p, n in sorted(paths.items())))
    for status, title in ((ENGINE, "engine failures"), (MODEL, "models whose own forward fails (not engine)"),
                          (UNBUILDABLE, "models that cannot be built"),
                          (NOT_REPLACEABLE, "k x k convs in residual branches that no parameter-free op may replace")):
        failed = sorted((r for r in results if r.status == status), key=lambda r: r.name)
        if failed:
            lines += ["", f"{title} ({len(failed)}):"]
            lines += [f"  {r.name} [{r.path or '-'}, {r.phase}]: {r.reason}" for r in failed]
    noted = sorted((r for r in results if r.note), key=lambda r: r.name)
    if noted:
        lines += ["", f"notes, not failures ({len(noted)}):"]
        lines += [f"  {r.name} [{r.path}]: {r.note}" for r in noted]
    return "\n".join(lines)


def _select(args: argparse.Namespace) -> tuple[list[str], int]:
    import timm

    names = timm.list_models()
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, f) for f in args.filter)] if args.filter else names
    return (chosen[: args.limit] if args.limit else chosen), len(names)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filter", action="append", help="fnmatch glob on model names (e.g. 'efficientnet*'); repeatable")
    p.add_argument("--limit", type=int, default=0, help="probe only the first N models (after --filter)")
    p.add_argument("--json", type=Path, help="write every per-model result and the summary counts here")
    p.add_argument("--jobs", type=int, default=1, help="worker processes at a time (default 1: shared cores)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model before its worker is killed")
    p.add_argument("--recycle", type=int, default=200, help="restart a worker after this many models (memory)")
    p.add_argument("--paths", choices=("auto", "meta", "cpu"), default="auto",
                   help="auto: meta device, CPU fallback; meta/cpu: that path only")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds after which no new model starts (0: none); the summary counts what was probed")
    p.add_argument("--known-no-target", type=Path,
                   help="model names (one per line) an earlier run of the same suite and target definition found "
                        "without a target: counted as such, not probed again")
    p.add_argument("--suite", choices=("depthwise", "residual"), default="depthwise",
                   help="depthwise: maxpool on depthwise convs; residual: the residual-family rules")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_docs_flag(p)
    return p.parse_args(argv)


def _progress_line(i: int, n: int, res: Result) -> str:
    text = f"[{i}/{n}] {res.name}: {res.status} ({res.path or '-'}, {res.seconds:.1f}s)"
    if res.status == OK:
        text += f" {res.replaced} replaced" + (f" ({', '.join(res.rules)})" if res.rules else "")
    elif res.reason:
        text += f" {res.phase}: {res.reason[:120]}"
    return text + (f" (note: {res.note})" if res.note else "")


def _families() -> dict[str, str]:
    """timm model name -> the timm module (family) that registers it."""
    import timm

    return {name: module for module in timm.list_modules() for name in timm.list_models(module=module)}


def main(argv: list[str] | None = None) -> int:
    """Run the coverage benchmark; exit 1 when any engine failure remains."""
    args = _parse(argv)
    if args.worker:
        _worker(args.paths, args.threads, args.suite)
        return 0
    names, total = _select(args)
    results: list[Result] = []
    if args.known_no_target:
        known = set(args.known_no_target.read_text().split())
        status = NO_TARGET if args.suite == "residual" else NO_DW
        results = [Result(n, status=status, path="earlier run") for n in names if n in known]
        names = [n for n in names if n not in known]
    start = time.monotonic()
    probed = 0
    for i, res in enumerate(run_all(names, args), 1):
        results.append(res)
        probed += 1
        print(_progress_line(i, len(names), res), file=sys.stderr, flush=True)
    wall = time.monotonic() - start
    summary = summarize(results, total, args.suite, unprobed=len(names) - probed)
    stamp = f"wall time {wall:.0f}s, {args.jobs} worker(s), {args.threads} thread(s) each, timeout {args.timeout:.0f}s"
    body = f"```text\n{summary}\n```"
    if args.suite == "residual":
        suite = _residual_suite()
        body += "\n\nPer family (timm module) and rule, over the models converted:\n\n" + suite.family_table(
            results, _families())
    print(f"{body}\n\n{stamp}")
    if args.write_docs:
        from pfconvert.report.machine import describe_machine, machine_info

        machine = f"{describe_machine(machine_info(args.threads))}, {stamp}"
        if args.suite == "residual":
            write_page("coverage-residual", "Coverage over timm: every model with a dense or grouped k x k conv in a "
                       f"residual branch, converted with {', '.join(suite.RULES)}", body, machine,
                       (suite.__doc__ or "").split("\n\n", 1)[1])
        else:
            write_page("coverage", "Coverage over timm: every model with a depthwise conv, converted with maxpool",
                       body, machine)
    if args.json:
        counts = Counter(r.status for r in results)
        args.json.write_text(json.dumps({"total_models": total, "counts": counts, "wall_seconds": round(wall, 1),
                                         "results": [asdict(r) for r in results]}, indent=1))
    return int(any(r.status == ENGINE for r in results))


if __name__ == "__main__":
    sys.exit(main())
