"""Verdict logic and the Report data structure, on synthetic timings (no model is run, nothing is timed)."""

from __future__ import annotations

import json
import random

import pytest

from pfconvert.report.report import (
    FASTER,
    MIN_MARGIN,
    SAME,
    SLOWER,
    LatencyRow,
    ModelStats,
    Report,
    compare_timings,
    noise_margin,
    verdict,
)


def _noisy(center: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


@pytest.mark.parametrize("speedup, expected", [(2.0, FASTER), (1.1, FASTER), (1.0, SAME), (1.02, SAME), (0.98, SAME),
                                               (0.9, SLOWER), (0.5, SLOWER)])
def test_verdict_thresholds(speedup: float, expected: str) -> None:
    assert verdict(speedup, margin=MIN_MARGIN) == expected


def test_verdict_rejects_nonsense() -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            verdict(bad)


def test_really_slower_model_is_never_called_faster() -> None:
    """2x slower with heavy noise: the verdict may be 'slower' but never 'faster'."""
    for seed in range(20):
        original = _noisy(10.0, 0.3, 10, seed)
        converted = _noisy(20.0, 0.3, 10, seed + 100)
        row = compare_timings("cpu", "CPU", 1, original, converted)
        assert row.speedup < 1
        assert row.verdict == SLOWER


def test_slightly_slower_is_not_faster_even_when_noisy() -> None:
    """5% slower under +-50% noise: some runs' medians look up to 1.7x faster, yet none is called faster; with
    +-0.5% noise the same 5% is called slower."""
    rows = [compare_timings("cpu", "CPU", 1, _noisy(10.0, 0.5, 6, seed), _noisy(10.5, 0.5, 6, seed + 7))
            for seed in range(20)]
    assert max(row.speedup for row in rows) > 1.5  # the noise makes the converted model look faster...
    assert {row.verdict for row in rows} <= {SAME, SLOWER}  # ...and the verdict does not fall for it
    quiet = compare_timings("cpu", "CPU", 1, _noisy(10.0, 0.005, 20, 1), _noisy(10.5, 0.005, 20, 2))
    assert quiet.verdict == SLOWER and quiet.margin == pytest.approx(MIN_MARGIN)


def test_equal_models_with_noise_are_same() -> None:
    for seed in range(10):
        row = compare_timings("cpu", "CPU", 1, _noisy(10.0, 0.2, 20, seed), _noisy(10.0, 0.2, 20, seed + 50))
        assert row.verdict == SAME


def test_clear_speedup_is_faster_and_ratio_is_original_over_converted() -> None:
    row = compare_timings("ort", "ONNX Runtime CPU", 32, [0.010] * 10, [0.005] * 10)
    assert row.verdict == FASTER
    assert row.speedup == pytest.approx(2.0)
    assert row.latency_ratio == pytest.approx(0.5)
    assert row.original_ms == pytest.approx(10.0) and row.converted_ms == pytest.approx(5.0)


def test_noise_margin_grows_with_spread_and_has_a_floor() -> None:
    steady = noise_margin([1.0] * 20, [1.0] * 20)
    noisy = noise_margin(_noisy(1.0, 0.5, 20, 1), _noisy(1.0, 0.5, 20, 2))
    assert steady == pytest.approx(MIN_MARGIN)
    assert noisy > steady
    assert noise_margin([1.0, 1.0], [1.0, 1.0]) >= 0.10  # too few rounds: only large differences count


def test_compare_timings_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        compare_timings("cpu", "CPU", 1, [1.0, 2.0], [1.0])


def _report() -> Report:
    rows = [compare_timings("cpu", "PyTorch CPU deployed (jit)", 1, [0.010] * 8, [0.008] * 8),
            compare_timings("cpu-eager", "PyTorch CPU eager (naive)", 1, [0.010] * 8, [0.030] * 8)]
    stats_o = ModelStats("mobilenetv2_100", 3_500_000, 300_000_000, 1_000_000, {1: 10_000_000})
    stats_c = ModelStats("mobilenetv2_100+maxpool", 3_400_000, 280_000_000, 5_000_000, {1: 9_000_000})
    return Report(stats_o, stats_c, (3, 224, 224), 2, rows, convention="MACs: fvcore", memory_note="peak: profiler",
                  machine={"cpu": "test"}, notes=["a note"])


def test_report_json_structure() -> None:
    data = json.loads(_report().to_json())
    assert set(data) >= {"original", "converted", "input_size", "threads", "latency", "convention", "memory_note",
                         "machine", "notes"}
    assert data["original"]["params"] == 3_500_000
    assert data["converted"]["peak_memory"] == {"1": 9_000_000}
    row = data["latency"][0]
    assert set(row) >= {"backend", "backend_label", "batch_size", "original_ms", "converted_ms", "original_p90_ms",
                        "converted_p90_ms", "runs", "speedup", "margin", "verdict", "latency_ratio"}
    assert [r["verdict"] for r in data["latency"]] == [FASTER, SLOWER]


def test_report_markdown_and_summary_say_slower_plainly() -> None:
    report = _report()
    md = report.to_markdown()
    assert "| PyTorch CPU deployed (jit) | 1 |" in md
    assert "**slower**" in md
    assert "MACs: fvcore" in md
    summary = report.summary()
    assert any("SLOWER" in line and "eager" in line for line in summary)
    assert not any("faster" in line for line in summary if "eager" in line)
    assert [r.backend for r in report.slowdowns()] == ["cpu-eager"]


def test_latency_row_is_plain_data() -> None:
    row = LatencyRow("cpu", "CPU", 1, 2.0, 1.0, 2.5, 1.5, 5, 2.0, 0.03, FASTER)
    assert row.latency_ratio == pytest.approx(0.5)
