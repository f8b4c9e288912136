"""benchmarks/pool_position.py: the pool moved to an inverted residual's narrow input computes what it says (the
same as pooling before the expansion, with the depthwise conv gone), keeps every parameter of the 1x1 convs, and the
--quick run tables each variant on each backend with the machine stamped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from benchmarks.pool_position import PooledConv2d, pool_at_input

ROOT = Path(__file__).resolve().parents[2]


def test_pool_at_input_pools_before_the_expansion_and_drops_the_depthwise_conv() -> None:
    model = timm.create_model("mobilenetv2_050", num_classes=10).eval()
    moved_model, moved, in_place = pool_at_input(model)
    assert (moved, in_place) == (16, 1)  # 16 inverted residuals, the first block has no expansion
    assert not any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 for m in moved_model.modules())
    block, original = moved_model.blocks[1][0], model.blocks[1][0]  # a stride-2 inverted residual
    assert isinstance(block.conv_pw, PooledConv2d) and block.conv_pw.pool.stride == 2
    assert block.conv_pw.conv.weight is not original.conv_pw.weight  # a copy: the original is untouched
    assert torch.equal(block.conv_pw.conv.weight, original.conv_pw.weight)
    x = torch.randn(2, 8, 16, 16)
    expected = original.conv_pw(nn.functional.max_pool2d(x, 3, 2, 1))
    assert torch.equal(block.conv_pw(x), expected)
    with torch.no_grad():
        assert moved_model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    removed = {n for n, _ in model.named_parameters()} - {n.replace(".conv_pw.conv.", ".conv_pw.")
                                                          for n, _ in moved_model.named_parameters()}
    assert removed and all(".conv_dw." in n or ".bn2." in n or n.startswith("blocks.0.0.bn1.") for n in removed)


@pytest.mark.slow  # about 30 s: three variants exported, quantized and timed at 64 px
def test_pool_position_quick_tables_each_variant() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pool_position.py"), "--quick", "--threads", "1",
                           "--backends", "ort"], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Machine: ") and "ISA " in lines[0]
    rows = [line for line in lines if line.startswith("| mobilenetv2_050 |")]
    assert [r.split(" | ")[1] for r in rows] == ["maxpool", "identity", "maxpool at block input"]
    assert all(r.split(" | ")[3].split("x")[0].replace(".", "").isdigit() for r in rows)
    assert "mobilenetv2_050: 16 blocks pool their input, 1 pool in place (no expansion)" in proc.stdout
