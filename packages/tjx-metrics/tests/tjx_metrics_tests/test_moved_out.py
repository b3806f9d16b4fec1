"""0.18 moved a training run's plan report, step log, device notes and progress bar to the
trainer app, which tjx.metrics cannot import: each old name is one ImportError line naming its
new import."""

from __future__ import annotations

import pytest

from tjx import metrics


@pytest.mark.parametrize(
    ("name", "new"),
    [
        ("plan_report", "`from trainer.plan.plan_report import plan_report`"),
        ("StepLog", "`from trainer.loop.step_log import StepLog`"),
        ("device_notes", "`from trainer.start.device_notes import device_notes`"),
        ("progress_bar", "`from trainer import progress_bar`"),
    ],
)
def test_a_name_that_went_to_the_trainer_names_its_new_import(name: str, new: str) -> None:
    with pytest.raises(ImportError) as err:
        getattr(metrics, name)
    assert str(err.value).startswith(f"tjx.metrics.{name} moved out of tjx.metrics in tjx-metrics")
    assert str(err.value).endswith(new) and "\n" not in str(err.value)
    assert name not in metrics.__all__


def test_what_stayed_still_reads_and_a_typo_is_an_attribute_error() -> None:
    assert callable(metrics.estimate) and callable(metrics.roofline)  # the reusable parts
    with pytest.raises(AttributeError, match="has no attribute 'plan_reprot'"):
        metrics.plan_reprot  # noqa: B018
