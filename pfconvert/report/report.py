"""The efficiency report as data: counts, memory, measured latency with an honest verdict per backend and batch size.

This module holds no measuring and no rendering: :mod:`pfconvert.report.run` fills a :class:`Report`,
:mod:`pfconvert.cli._report_render` draws it with rich, and :meth:`Report.to_dict` / :meth:`Report.to_markdown` give the
machine-readable and README forms.

A speed-up is ``original latency / converted latency`` (above 1: the converted model is faster), measured in the same
run with the two models interleaved. :func:`verdict` calls it "faster" or "slower" only when it is outside the noise
of the measurement; a conversion that makes a model slower is never reported as a speed-up.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .._format import change, human

__all__ = ["median", "median_ms", "FASTER", "SLOWER", "SAME", "MIN_MARGIN", "ModelStats", "LatencyRow", "Report", "verdict", "noise_margin",
           "compare_timings"]

FASTER = "faster"
SLOWER = "slower"
SAME = "same (within noise)"
MIN_MARGIN = 0.03
"""Smallest relative difference ever called a change: 3%, below what run-to-run drift of a shared CPU explains."""


@dataclass
class ModelStats:
    """Static facts about one model of the comparison."""

    name: str
    params: int
    macs: int
    pool_ops: int
    peak_memory: dict[int, int] = field(default_factory=dict)
    """Batch size -> peak bytes (see :attr:`Report.memory_note` for what is measured)."""
    accuracy: float | None = None


@dataclass
class LatencyRow:
    """Latency of the original and the converted model on one backend at one batch size."""

    backend: str
    backend_label: str
    batch_size: int
    original_ms: float
    converted_ms: float
    original_p90_ms: float
    converted_p90_ms: float
    runs: int
    speedup: float
    """``original_ms / converted_ms``: above 1 the converted model is faster."""
    margin: float
    """Relative noise margin of :attr:`speedup` (0.05 = 5%); see :func:`noise_margin`."""
    verdict: str

    @property
    def latency_ratio(self) -> float:
        """``converted_ms / original_ms`` (below 1: faster)."""
        return self.converted_ms / self.original_ms


def median(values: Sequence[float]) -> float:
    """The median as pfconvert reports it everywhere: the upper middle value for an even count (a measured value,
    never an average of two)."""
    return sorted(values)[len(values) // 2]


def median_ms(seconds: Sequence[float]) -> float:
    """The median of timed rounds (seconds), in milliseconds."""
    return median(seconds) * 1e3


def noise_margin(original: Sequence[float], converted: Sequence[float], floor: float = MIN_MARGIN) -> float:
    """Relative margin within which a speed-up is indistinguishable from noise.

    The two models run in interleaved rounds, so round ``i`` gives a paired ratio ``original[i] / converted[i]``.
    The margin is two standard errors of the median of those ratios (standard error of a median ~ 1.253 sigma /
    sqrt(n), sigma estimated robustly as IQR / 1.349), relative to that median, and never less than ``floor``.

    Args:
        original: Per-round latencies of the original model (any unit).
        converted: Per-round latencies of the converted model, same length and order.
        floor: The smallest margin returned.
    """
    ratios = [o / c for o, c in zip(original, converted) if c > 0]
    if len(ratios) < 4:
        return max(floor, 0.10)  # too few rounds to estimate the spread: only call large differences
    q = statistics.quantiles(ratios, n=4)
    sigma = (q[2] - q[0]) / 1.349
    se = 1.253 * sigma / math.sqrt(len(ratios))
    return max(floor, 2.0 * se / statistics.median(ratios))


def verdict(speedup: float, margin: float = MIN_MARGIN) -> str:
    """``faster`` / ``slower`` / ``same (within noise)`` for a speed-up (original / converted latency).

    Args:
        speedup: Original latency divided by converted latency.
        margin: Relative noise margin; a speed-up within ``[1 / (1 + margin), 1 + margin]`` is "same".
    """
    if not math.isfinite(speedup) or speedup <= 0:
        raise ValueError(f"speed-up must be a positive number, got {speedup}")
    if speedup > 1.0 + margin:
        return FASTER
    if speedup < 1.0 / (1.0 + margin):
        return SLOWER
    return SAME


def _p90(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def compare_timings(backend: str, label: str, batch_size: int, original_s: Sequence[float],
                    converted_s: Sequence[float]) -> LatencyRow:
    """Summarise interleaved per-round timings (seconds) of both models into a :class:`LatencyRow`."""
    if not original_s or len(original_s) != len(converted_s):
        raise ValueError("need the same, non-zero number of timings for both models")
    o_ms, c_ms = median_ms(original_s), median_ms(converted_s)
    speedup = o_ms / c_ms
    margin = noise_margin(original_s, converted_s)
    return LatencyRow(backend, label, batch_size, o_ms, c_ms, _p90(original_s) * 1e3, _p90(converted_s) * 1e3,
                      len(original_s), speedup, margin, verdict(speedup, margin))


@dataclass
class Report:
    """Everything ``pfconvert report`` prints: one original and one converted model, measured together."""

    original: ModelStats
    converted: ModelStats
    input_size: tuple[int, int, int]
    threads: int
    latency: list[LatencyRow]
    convention: str
    memory_note: str
    machine: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    """Top-1 per way of running the models (``PyTorch fp32``, ``OpenVINO CPU int8 (NNCF PTQ)``...):
    ``{"original": top-1, "converted": top-1}``, measured on the user's data when given."""

    def deployed(self) -> list[LatencyRow]:
        """Per batch size, the row of the fastest backend for the original: the runtime a user deploys with, and
        what the conversion gains there (the headline figure)."""
        best: dict[int, LatencyRow] = {}
        for row in self.latency:
            if row.batch_size not in best or row.original_ms < best[row.batch_size].original_ms:
                best[row.batch_size] = row
        return [best[bs] for bs in sorted(best)]

    def deployed_lines(self) -> list[str]:
        """The headline: per batch size, the fastest backend measured for the original, and the speed-up there."""
        lines = []
        for row in self.deployed():
            change = (f"{row.speedup:.2f}x faster" if row.verdict == FASTER else
                      f"SLOWER ({row.latency_ratio:.2f}x the time)" if row.verdict == SLOWER else
                      f"no measurable change ({row.speedup:.2f}x, noise +-{row.margin:.0%})")
            lines.append(f"Deployed, batch {row.batch_size}: {change} on {row.backend_label}, the fastest of the "
                         f"backends measured for the original ({row.original_ms:.2f} ms -> {row.converted_ms:.2f} ms)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (latency rows carry ``latency_ratio`` too)."""
        data = asdict(self)
        for row, obj in zip(data["latency"], self.latency):
            row["latency_ratio"] = obj.latency_ratio
        for key in ("original", "converted"):
            data[key]["peak_memory"] = {str(b): v for b, v in data[key]["peak_memory"].items()}
        data["input_size"] = list(self.input_size)
        data["deployed"] = [{"batch_size": r.batch_size, "backend": r.backend, "backend_label": r.backend_label,
                             "speedup": r.speedup, "verdict": r.verdict} for r in self.deployed()]
        return data

    def to_json(self) -> str:
        """The report as indented JSON."""
        from .._json import strict_dumps

        return strict_dumps(self.to_dict(), indent=2)

    def slowdowns(self) -> list[LatencyRow]:
        """Rows where the converted model is measurably slower."""
        return [row for row in self.latency if row.verdict == SLOWER]

    def summary(self) -> list[str]:
        """Plain sentences for the end of the report: where it got faster, where it did not."""
        lines = []
        for row in self.latency:
            where = f"{row.backend_label} at batch {row.batch_size}"
            if row.verdict == FASTER:
                lines.append(f"{where}: {row.speedup:.2f}x faster")
            elif row.verdict == SLOWER:
                lines.append(f"{where}: SLOWER, the converted model takes {row.latency_ratio:.2f}x the original's time")
            else:
                lines.append(f"{where}: no measurable change ({row.speedup:.2f}x, noise +-{row.margin:.0%})")
        return lines

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown: a counts table, a latency table and the notes."""
        o, c = self.original, self.converted
        out = [f"**{o.name}** vs **{c.name}**, input {'x'.join(map(str, self.input_size))}, "
               f"{self.threads} CPU threads", "", "| | original | converted | change |", "|---|---:|---:|---:|"]
        for label, a, b in (("params", o.params, c.params), ("MACs", o.macs, c.macs),
                            ("pool ops", o.pool_ops, c.pool_ops)):
            out.append(f"| {label} | {human(a)} | {human(b)} | {change(a, b)} |")
        for bs in sorted(set(o.peak_memory) & set(c.peak_memory)):
            a, b = o.peak_memory[bs], c.peak_memory[bs]
            out.append(f"| peak memory, batch {bs} | {human(a, 'B')} | {human(b, 'B')} | {change(a, b)} |")
        if o.accuracy is not None and c.accuracy is not None:
            out.append(f"| top-1 | {o.accuracy:.2f} | {c.accuracy:.2f} | {c.accuracy - o.accuracy:+.2f} |")
        for label, top1 in self.accuracy.items():
            a, b = top1["original"], top1["converted"]
            out.append(f"| top-1, {label} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
        out += ["", "| backend | batch | original ms | converted ms | speed-up | verdict |",
                "|---|---:|---:|---:|---:|---|"]
        for r in self.latency:
            mark = f"**{r.verdict}**" if r.verdict == SLOWER else r.verdict
            out.append(f"| {r.backend_label} | {r.batch_size} | {r.original_ms:.2f} | {r.converted_ms:.2f} "
                       f"| {r.speedup:.2f}x | {mark} |")
        out += ["", *(f"**{line}**" for line in self.deployed_lines())] if self.latency else []
        out += ["", f"- {self.convention}", f"- {self.memory_note}",
                "- Latency: median of interleaved runs after warm-up; speed-up = original / converted; changes "
                "within the noise margin are reported as 'same'."]
        out += [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"


