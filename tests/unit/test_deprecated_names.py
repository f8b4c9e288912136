"""One name per concept: ``to_dict`` (not ``as_dict``) and ``bn_recalib_images`` (not ``calib_images``); the old
names still work for one release, each use warning with a DeprecationWarning that names the new one."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

from pfconvert.errors import DataError
from pfconvert.recover.finetune.api import EvalReport
from pfconvert.recover.finetune.loop import RunState
from pfconvert.recover.finetune.results import FinetuneResult
from pfconvert.recover.metrics import EvalMetrics
from pfconvert.study.plan import plan_on_data
from pfconvert.study.sensitivity import validation_tools


def test_as_dict_is_a_warned_alias_of_to_dict() -> None:
    metrics = EvalMetrics(top1=90.0, top5=99.0, loss=0.3, count=10)
    with pytest.warns(DeprecationWarning, match=r"EvalMetrics.as_dict\(\) is deprecated.*use to_dict\(\)"):
        old = metrics.as_dict("val_")
    assert old == metrics.to_dict("val_") == {"val_top1": 90.0, "val_top5": 99.0, "val_loss": 0.3, "val_count": 10}
    report = EvalReport("a", "model.safetensors", "fashion-mnist", "test", (1, 28, 28), {"student": metrics})
    with pytest.warns(DeprecationWarning, match="EvalReport.as_dict"):
        assert report.as_dict() == report.to_dict() and report.to_dict()["metrics"]["student"]["top1"] == 90.0
    for cls in (RunState, FinetuneResult):
        assert callable(cls.to_dict) and cls.as_dict.__name__ == "as_dict" and "Deprecated" in cls.as_dict.__doc__


def test_to_dict_itself_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EvalMetrics(1.0, 2.0, 3.0, 4).to_dict()


def test_calib_images_is_a_warned_alias_of_bn_recalib_images() -> None:
    with pytest.warns(DeprecationWarning, match=r"validation_tools\(calib_images=...\).*use bn_recalib_images="), \
            pytest.raises(DataError, match="bn_recalib_images must be 0 \\(off\\) or more, got -1"):
        validation_tools(nn.Identity(), "fashion-mnist", calib_images=-1)
    with pytest.raises(TypeError, match="both calib_images= .* and bn_recalib_images="):
        plan_on_data(nn.Identity(), [], "fashion-mnist", calib_images=1, bn_recalib_images=1)
