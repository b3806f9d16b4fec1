"""The run directory: config, JSONL log, checkpoints, samples, loss curve, final summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

CONFIG_FILE = "config.yaml"
FINAL_FILE = "final.json"
MODEL_FILE = "model.json"
DATA_FILE = "data.json"
SAMPLES_DIR = "samples"
CHECKPOINTS_DIR = "checkpoints"
CURVE_FILE = "loss_curve.png"


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless ``path`` already holds exactly it; whether it wrote.

    A resume with the same settings then leaves the run's files (and their times) as they were.
    """
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return False
    path.write_text(text, "utf-8")
    return True


def create(run_dir: Path, config: dict[str, Any]) -> None:
    """Make the run directory and write the effective config (the first thing ever written)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SAMPLES_DIR).mkdir(exist_ok=True)
    write_if_changed(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def write_samples(run_dir: Path, step: int, texts: list[str], prompts: list[str]) -> Path:
    """One text file per sampling step."""
    path = run_dir / SAMPLES_DIR / f"step_{step:07d}.txt"
    parts = [
        f"--- sample {i} (prompt {p!r}) ---\n{t}\n"
        for i, (p, t) in enumerate(zip(prompts, texts, strict=True))
    ]
    path.write_text("\n".join(parts), "utf-8")
    return path


def write_final(run_dir: Path, summary: dict[str, Any]) -> None:
    """``final.json``: last step, metrics and the params digest.

    Written to a temporary file and renamed, so a kill (or a second Ctrl-C) mid-write leaves no
    half file: ``final.json`` exists complete or not at all (and ``--resume`` then rebuilds it).
    """
    tmp = run_dir / f".{FINAL_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True), "utf-8")
    os.replace(tmp, run_dir / FINAL_FILE)


def read_config(run_dir: Path) -> dict[str, Any]:
    """The config saved in a run directory."""
    data = yaml.safe_load((run_dir / CONFIG_FILE).read_text("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{run_dir / CONFIG_FILE}: not a config mapping")
    return data


def write_json(run_dir: Path, name: str, data: dict[str, Any]) -> None:
    """A small JSON file in the run directory (``model.json``, ``data.json``); unchanged content
    is not rewritten."""
    write_if_changed(run_dir / name, json.dumps(data, indent=2, sort_keys=True, default=str))


def latest_saved_step(run_dir: Path) -> int | None:
    """The newest committed checkpoint's step, or None.

    orbax writes a step into a temporary folder and renames it to the bare step number when it is
    complete, so only all-digit folder names count.
    """
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return None
    steps = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, default=None)
