"""``lp_pool``, the op of docs/extending.md: its module and this test are all a new op needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pfconvert
from pfconvert.ops.lp_pool import LpPool2d
from pfconvert.rules import parse_rules

RULE = """
name: lp
rules:
  - name: depthwise-to-lp-pool
    match: {op: conv2d, depthwise: true}
    replace: {op: lp_pool, p: 2}
    absorb: [norm]
"""


def test_lp_pool_replaces_depthwise_convs_with_their_geometry() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1, groups=4), nn.BatchNorm2d(4), nn.ReLU())
    converted, record = pfconvert.convert(net, parse_rules(RULE), input_size=(4, 9, 9))
    pool = converted[0]
    assert isinstance(pool, LpPool2d) and isinstance(converted[1], nn.Identity)
    assert record.replacements[0].new == "LpPool2d(p=2, kernel=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1))"
    x = torch.rand(1, 4, 9, 9)
    expected = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)) ** 2, 3, 2).mul(9).sqrt()  # (sum of squares in the window)^(1/2)
    assert torch.allclose(pool(x), expected, atol=1e-6) and pool(x).shape == net[0](x).shape
    counts = pfconvert.count_macs(converted, (4, 9, 9))
    assert counts.pool_ops == 4 * 5 * 5 * 9  # one per window element per output, as the registration declares
