"""Small models and utilities shared by the tests (imported as ``helpers``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

__all__ = ["meta_model", "tiny_input", "run_cli", "refused_in_one_line", "DwBlock", "MultiplierNet"]


def meta_model(name: str, **kwargs: object) -> nn.Module:
    """A timm model on the meta device: structure and parameter counts without memory or compute."""
    import timm  # only here: unit tests use the other helpers without importing timm

    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def tiny_input(size: tuple[int, int, int] = (3, 64, 64), batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A reproducible random batch."""
    return torch.randn((batch, *size), generator=torch.Generator().manual_seed(seed))


class DwBlock(nn.Module):
    """x + relu_(dw(x)): an in-place activation right after a depthwise conv inside a residual."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        return shortcut + self.act(self.conv_dw(x))


class MultiplierNet(nn.Module):
    """A depth-multiplier conv (4 -> 8 channels, groups=4) followed by BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def run_cli(argv: list[str], capsys: "pytest.CaptureFixture[str]",
            monkeypatch: "pytest.MonkeyPatch") -> tuple[int, str, str]:
    """Run ``pfconvert ARGV`` in-process through the console-script entry point; returns (exit code, out, err)."""
    import sys

    from pfconvert.cli.app import main

    monkeypatch.setattr(sys, "argv", ["pfconvert", *argv])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def refused_in_one_line(argv: list[str], message: str, capsys: "pytest.CaptureFixture[str]",
                        monkeypatch: "pytest.MonkeyPatch") -> str:
    """Run ``pfconvert ARGV`` and check that it is refused the house way: exit 1, no traceback, the last stderr line
    ``Error: ...`` matching the regular expression ``message``, and nothing before it but the ``model:`` / ``input:``
    header. Returns stderr."""
    import re

    code, out, err = run_cli(argv, capsys, monkeypatch)
    assert code == 1 and "Traceback" not in err + out, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("Error:") and re.search(message, lines[-1]), err
    assert all(line.startswith(("model: ", "input: ")) for line in lines[:-1]), err
    return err
