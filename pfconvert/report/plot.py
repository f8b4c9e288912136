"""PNG plots of a :class:`~pfconvert.report.report.Report` (matplotlib, Agg backend: no display needed).

- Accuracy known for both models: accuracy vs latency, one panel per batch size, one arrow per backend from the
  original to the converted model (up-left is better).
- Otherwise: latency per backend as grouped bars (original vs converted), one panel per batch size, each bar pair
  labelled with its speed-up and verdict.
"""

from __future__ import annotations

from pathlib import Path

from .._files import atomic_write, check_output_file
from ..errors import PfconvertError
from .report import FASTER, SLOWER, Report

__all__ = ["plot_report", "check_plot_target"]

_COLORS = {"original": "#7f7f7f", "converted": "#1f77b4", FASTER: "#2ca02c", SLOWER: "#d62728"}


def _figure(n: int, title: str):  # -> (Figure, list[Axes]); matplotlib types stay out of the signature
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, list(axes[0])


def _batches(report: Report) -> list[int]:
    return sorted({row.batch_size for row in report.latency})


def _bars(report: Report, title: str):
    batches = _batches(report)
    fig, axes = _figure(len(batches), title)
    for ax, bs in zip(axes, batches):
        rows = [r for r in report.latency if r.batch_size == bs]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r.original_ms for r in rows], 0.4, label=report.original.name,
               color=_COLORS["original"])
        bars = ax.bar([x + 0.2 for x in xs], [r.converted_ms for r in rows], 0.4, label=report.converted.name,
                      color=[_COLORS.get(r.verdict, _COLORS["converted"]) for r in rows])
        for bar, r in zip(bars, rows):
            text = {FASTER: f"{r.speedup:.2f}x faster", SLOWER: f"{r.latency_ratio:.2f}x slower"}.get(
                r.verdict, f"{r.speedup:.2f}x (same)")
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8)
        ax.set_xticks(list(xs), [r.backend_label.replace(" (", "\n(") for r in rows], fontsize=7)
        ax.set_ylabel("latency, ms (median)")
        ax.set_title(f"batch {bs}", fontsize=10)
        ax.legend(fontsize=7)
    return fig


def _accuracy(report: Report, title: str):
    batches = _batches(report)
    fig, axes = _figure(len(batches), title)
    acc_o, acc_c = report.original.accuracy, report.converted.accuracy
    for ax, bs in zip(axes, batches):
        for i, r in enumerate(r for r in report.latency if r.batch_size == bs):
            color = _COLORS.get(r.verdict, _COLORS["converted"])
            ax.annotate("", (r.converted_ms, acc_c), (r.original_ms, acc_o),
                        arrowprops={"arrowstyle": "->", "color": color})
            ax.scatter([r.original_ms], [acc_o], color=_COLORS["original"], zorder=3)
            ax.scatter([r.converted_ms], [acc_c], color=color, zorder=3)
            ax.annotate(r.backend_label, (r.converted_ms, acc_c), fontsize=7, xytext=(4, 4 + 10 * i),
                        textcoords="offset points", color=color)  # staggered: labels of close points overlap
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.25)
        ax.set_xlabel("latency, ms (median, log scale)")
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"batch {bs}: {report.original.name} (grey) -> {report.converted.name}", fontsize=9)
    return fig


def check_plot_target(path: str | Path, overwrite: bool = False) -> Path:
    """The PNG file a plot may be written to.

    Raises:
        PfconvertError: the name does not end in ``.png``, or is a directory.
        OutputExistsError: the file exists and ``overwrite`` is not set.
    """
    return check_output_file(path, overwrite, option="--plot", example="report.png", suffix=".png")


def plot_report(report: Report, path: str | Path, overwrite: bool = False) -> Path:
    """Write a PNG of the report (see the module docstring for what is drawn) atomically; returns the path.

    Raises:
        PfconvertError: see :func:`check_plot_target`, or the report has no latency rows.
    """
    path = check_plot_target(path, overwrite)
    if not report.latency:
        raise PfconvertError("the report has no latency rows to plot")
    title = f"{report.original.name} vs {report.converted.name} ({report.threads} CPU threads)"
    have_acc = report.original.accuracy is not None and report.converted.accuracy is not None
    fig = _accuracy(report, title) if have_acc else _bars(report, title)
    fig.tight_layout()
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda temp: fig.savefig(temp, dpi=120, format="png"), fsync=False)
    finally:
        plt.close(fig)
    return path
