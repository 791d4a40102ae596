"""The performance model against published measurements: every non-outlier within tolerance."""

from __future__ import annotations

import pytest

from nodes.accelerators import ACCELERATORS, AcceleratorKind
from nodes.calibration import (
    CALIBRATION_POINTS,
    CalibrationPoint,
    calibration_table,
    predict,
)
from nodes.models import Dtype

FITTED = [p for p in CALIBRATION_POINTS if not p.outlier]


def _label(point: CalibrationPoint) -> str:
    return f"{point.model}@{point.accelerator}-b{point.batch_size}-{point.metric}"


@pytest.mark.parametrize("point", FITTED, ids=_label)
def test_prediction_within_tolerance(point: CalibrationPoint) -> None:
    predicted = predict(point)
    assert abs(predicted / point.published - 1) <= point.tolerance, (
        f"{_label(point)}: predicted {predicted:.4g}, published {point.published:.4g}"
    )


@pytest.mark.parametrize(
    ("model", "card", "metric", "published"),
    [
        ("llama-3.1-8b", "A100-40GB", "decode_tokens_per_s", 75.0),
        ("llama-3.1-8b", "L40S", "decode_tokens_per_s", 44.0),
        ("qwen2.5-0.5b", "L4", "decode_tokens_per_s", 168.0),
    ],
)
def test_required_anchors_are_fitted(model: str, card: str, metric: str, published: float) -> None:
    assert any(
        (p.model, p.accelerator, p.metric, p.published, p.batch_size) == (
            model, card, metric, published, 1
        )
        for p in FITTED
    )


def test_outliers_carry_reasons_and_stay_few() -> None:
    outliers = [p for p in CALIBRATION_POINTS if p.outlier]
    assert all(p.reason for p in outliers)
    assert len(outliers) < len(FITTED) / 2


@pytest.mark.parametrize("name", [n for n, s in ACCELERATORS.items()
                                  if s.kind is AcceleratorKind.GPU])
def test_calibrated_flag_matches_table(name: str) -> None:
    anchored = any(p.accelerator == name and p.engine == "vllm" for p in FITTED)
    assert ACCELERATORS[name].calibrated == anchored


def test_table_rows_hold_prediction_and_ratio() -> None:
    rows = calibration_table()
    assert [r.point for r in rows] == list(CALIBRATION_POINTS)
    for row in rows:
        assert row.ratio == pytest.approx(row.predicted / row.point.published)
        assert row.within_tolerance or row.point.outlier


def test_point_validation() -> None:
    with pytest.raises(ValueError, match="reason"):
        CalibrationPoint("s", "llama-3.1-8b", "L4", Dtype.BF16, 1, 1, 1, "tpot_s", 1.0,
                         outlier=True)
    with pytest.raises(ValueError, match="prompt"):
        CalibrationPoint("s", "llama-3.1-8b", "L4", Dtype.BF16, 1, 1, 1,
                         "output_tokens_per_s", 1.0)
