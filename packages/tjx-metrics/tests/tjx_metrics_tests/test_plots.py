import json
import struct
from typing import Any

import matplotlib.image
import numpy as np
import pytest

from tjx.metrics import JsonlLogger, load_curves, plot_curves, plot_run


def _write_log(path, rng, steps=40):
    with JsonlLogger(path) as logger:
        for step in range(steps):
            logger.log_scalars(
                step,
                {
                    "loss": 5.0 * np.exp(-step / 15) + rng.uniform(0, 0.1),
                    "learning_rate": 3e-4 * min(1.0, (step + 1) / 10),
                },
            )
            if step % 10 == 0:
                logger.log_scalars(step, {"eval_loss": 5.0 * np.exp(-step / 15) + 0.2})
                logger.log_text(step, "sample", "text")


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_curves_writes_a_sensible_png(tmp_path):
    rng = np.random.default_rng(0)
    log = tmp_path / "metrics.jsonl"
    _write_log(log, rng)
    out = plot_curves(log, tmp_path / "plots" / "curves.png", dpi=100)
    assert out == tmp_path / "plots" / "curves.png"
    assert _png_size(out) == (800, 520)  # 8 in × 100 dpi, two panels × 2.6 in
    assert 10_000 < out.stat().st_size < 2_000_000
    pixels = matplotlib.image.imread(out)
    dark = (pixels[..., :3].mean(-1) < 0.5).mean()
    assert 0.001 < dark < 0.5  # lines and text drawn, not blank and not a filled canvas

    grouped = plot_curves(
        log,
        tmp_path / "g.png",
        keys=(("loss", "eval_loss"), "learning_rate", "absent"),
        log_y=("loss",),
        title="run",
    )
    assert _png_size(grouped) == (800, 520)


def test_load_curves_last_record_wins_and_sorted(tmp_path):
    log = tmp_path / "m.jsonl"
    rows: list[dict[str, Any]] = [{"step": s, "loss": float(s)} for s in (1, 2, 3)]
    rows += [{"step": s, "loss": 10.0 + s} for s in (2, 3, 4)]  # resumed from step 2
    rows += [
        {"step": 5, "loss": "nan-as-text"},
        {"step": "x", "loss": 1.0},
        {"step": 6, "loss": True},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = load_curves(log, ["loss", "missing"])
    assert curves == {"loss": ([1, 2, 3, 4], [1.0, 12.0, 13.0, 14.0])}


def test_plot_curves_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        plot_curves(tmp_path / "nope.jsonl", tmp_path / "x.png")
    log = tmp_path / "m.jsonl"
    log.write_text(json.dumps({"step": 1, "accuracy": 0.5}) + "\n")
    with pytest.raises(ValueError, match="has: accuracy"):
        plot_curves(log, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_curves(log, tmp_path / "x.png", keys=())
    assert not (tmp_path / "x.png").exists()


def test_plot_run_plots_the_runs_log(tmp_path):
    _write_log(tmp_path / "metrics.jsonl", np.random.default_rng(1))
    out = plot_run(tmp_path, tmp_path / "loss_curve.png", keys=("loss", "eval_loss"))
    assert out == tmp_path / "loss_curve.png" and _png_size(out) == (800, 520)


def test_plot_run_never_raises(tmp_path, capsys):
    # No log (nothing logged yet, or no JSONL sink): nothing to plot and nothing to say.
    assert plot_run(tmp_path, tmp_path / "c.png") is None
    assert capsys.readouterr().err == "" and not (tmp_path / "c.png").exists()
    # A log of no scalar yet (a run stopped before its first log step: its samples only): the
    # same. It was a warning line ending in "it has: " and nothing.
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 2, "text": {"s": "hi"}}) + "\n")
    assert plot_run(tmp_path, tmp_path / "c.png") is None
    assert capsys.readouterr().err == "" and not (tmp_path / "c.png").exists()
    with pytest.raises(ValueError, match="holds no scalar yet"):  # asked for, it is an error
        plot_curves(tmp_path / "metrics.jsonl", tmp_path / "c.png")
    # A log without the keys: one warning line instead of plot_curves' ValueError.
    (tmp_path / "other.jsonl").write_text(json.dumps({"step": 1, "accuracy": 0.5}) + "\n")
    assert plot_run(tmp_path, tmp_path / "c.png", jsonl_name="other.jsonl") is None
    err = capsys.readouterr().err
    assert (
        err.startswith("warning: could not plot c.png: none of the keys") and err.count("\n") == 1
    )


def test_a_single_validation_point_is_visible(tmp_path):
    # A short run evaluates once, at its end, and a line through one point draws nothing: a
    # sparse curve carries markers. In a panel of its own (no legend) the only pixels of the
    # first colour of matplotlib's cycle (C0, #1f77b4) are the curve's.
    rng = np.random.default_rng()
    log = tmp_path / "metrics.jsonl"
    with JsonlLogger(log) as logger:
        logger.log_scalars(40, {"val_loss": 3.0 + rng.uniform(0, 0.1)})
        for step in range(1, 41):
            logger.log_scalars(step, {"loss": 3.0 + rng.uniform(0, 0.1)})

    def c0_pixels(key: str) -> int:
        rgb = matplotlib.image.imread(plot_curves(log, tmp_path / f"{key}.png", keys=[key]))
        return int((np.abs(rgb[..., :3] - np.array([0.122, 0.467, 0.706])).max(-1) < 0.1).sum())

    assert c0_pixels("val_loss") > 20  # a marker ~4 pt across at 100 dpi: ~30 pixels
    assert c0_pixels("loss") > 500  # the dense curve still draws its line
