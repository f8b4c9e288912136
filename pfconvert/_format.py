"""Number formatting shared by every table pfconvert prints (CLI, report, Markdown): ``3.50M``, ``-32.2%``."""

from __future__ import annotations

__all__ = ["human", "change"]


def human(n: float, unit: str = "") -> str:
    """``3504872 -> '3.50M'``; ``human(2e9, 'B') -> '2.00GB'``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def change(a: float, b: float) -> str:
    """Relative change from ``a`` to ``b`` (``-32.2%``); ``330x`` for a growth of 10x or more; ``-`` when ``a`` is 0."""
    if not a:
        return "-"
    if b / a >= 10:  # "+33030.0%" reads worse than "330x"
        return f"{b / a:.0f}x"
    return f"{(b - a) / a * 100:+.1f}%"
