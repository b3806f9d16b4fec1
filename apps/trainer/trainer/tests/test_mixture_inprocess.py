"""A run on a weighted mixture (``data.sources``): each source's validation loss in the metrics,
a bit-exact resume, and one-line errors for a bad mixture with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.cli import main
from trainer.tests.test_loop_inprocess import SETS


def _corpora(root):
    """Two local texts of different alphabets (fresh random lines), so their losses differ."""
    rng = np.random.default_rng()
    web, code = root / "web.txt", root / "code.txt"
    web.write_text("".join(" ".join(rng.choice(list("abcdefgh"), 12)) + "\n" for _ in range(300)))
    code.write_text("".join("".join(rng.choice(list("{}();=+0"), 20)) + "\n" for _ in range(200)))
    return web, code


def _argv(root, sources, *extra):
    argv = ["--config", "tiny", "--run-dir", str(root / "run")]
    for item in [*SETS, f"data.cache_dir={root / 'cache'}", f"data.sources={sources}"]:
        argv += ["--set", item]
    return [*argv, *extra]


def _mix(web, code):
    return f"[{{source: {web}, weight: 3}}, {{source: {code}, weight: 1, name: code}}]"


def test_each_source_has_its_validation_loss_and_the_pooled_one_lies_between(in_tmp, capsys):
    """... and a source folder's file of another type is named before the data is prepared,
    not skipped without a word."""
    web, code = _corpora(in_tmp)
    folder = in_tmp / "code"
    folder.mkdir()
    code = code.rename(folder / "code.txt")  # the same one document, from a folder
    (folder / "more.parquet.gz").write_bytes(b"(Parquet compresses its own columns: not read)")
    assert main(_argv(in_tmp, _mix(web, folder))) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines.index("data: preparing a mixture of web.txt (3), code (1)…") + 1 == lines.index(
        f"data: left out 1 file(s) of other types: {folder / 'more.parquet.gz'} (tjx reads .txt, "
        ".text, .md, .jsonl, .parquet files (.txt, .text, .md, .jsonl, .json ones also "
        "compressed: .gz, .bz2, .xz, .zst); convert them to one of these to read them)"
    )
    rows = [
        json.loads(line) for line in (in_tmp / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:
        own = (r["val_loss/web.txt"], r["val_loss/code"])
        assert own[0] != own[1] and min(own) <= r["val_loss"] <= max(own)
        tokens = r["val_num_tokens/web.txt"], r["val_num_tokens/code"]
        pooled = (own[0] * tokens[0] + own[1] * tokens[1]) / sum(tokens)  # token-weighted
        assert r["val_loss"] == pytest.approx(pooled, rel=1e-6)
        assert r["val_bits_per_byte/code"] > 0 and r["val_bits_per_byte"] > 0
    described = json.loads((in_tmp / "run" / "data.json").read_text())
    assert [p["name"] for p in described["mixture"]] == ["web.txt", "code"]
    assert [p["weight"] for p in described["mixture"]] == [3.0, 1.0]


def test_a_mixture_run_resumes_bit_exactly(in_tmp, capsys):
    web, code = _corpora(in_tmp)
    whole, split = in_tmp / "whole", in_tmp / "split"
    whole.mkdir(), split.mkdir()
    assert main(_argv(whole, _mix(web, code))) == 0
    assert main(_argv(split, _mix(web, code), "--set", "train.stop_at=2")) == 0
    assert main(_argv(split, _mix(web, code), "--resume")) == 0
    capsys.readouterr()
    a, b = (json.loads((d / "run" / "final.json").read_text()) for d in (whole, split))
    assert a["params_sha256"] == b["params_sha256"] and a["val_loss"] == b["val_loss"]
    # Other weights are another data stream: the resume is refused in one line.
    other = f"[{{source: {web}, weight: 1}}, {{source: {code}, weight: 1, name: code}}]"
    (split / "run" / "final.json").unlink()
    assert main(_argv(split, other, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.sources" in err[0] and "weight" in err[0], err


@pytest.mark.parametrize(
    ("sources", "says"),
    [
        ("[{source: WEB, weight: 0}]", "data.sources[0].weight: must be a positive number, got 0"),
        (
            "[{source: WEB}, {source: CODE, name: web.txt}]",
            "data.sources[1].name: 'web.txt' is already the name of data.sources[0]",
        ),
        ("[{source: WEB, weight: 2, mix: 1}]", "data.sources[0]: unknown key(s) mix"),
        ("[{source: WEB}, {source: MISSING}]", "data.sources[1].source: "),
    ],
)
def test_a_bad_mixture_is_one_line_and_writes_nothing(in_tmp, capsys, sources, says):
    web, code = _corpora(in_tmp)
    sources = sources.replace("WEB", str(web)).replace("CODE", str(code))
    assert main(_argv(in_tmp, sources.replace("MISSING", str(in_tmp / "nope.txt")))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"trainer: error: {says}"), err
    assert not (in_tmp / "run").exists() and not (in_tmp / "cache").exists()


def test_data_flag_and_a_mixture_do_not_mix(in_tmp, capsys):
    web, code = _corpora(in_tmp)
    assert main(_argv(in_tmp, _mix(web, code), "--data", str(web))) == 2
    assert "--data: this config trains on the mixture data.sources" in capsys.readouterr().err


def test_a_dropping_mixture_too_short_for_the_run_is_refused_up_front(in_tmp, capsys):
    web, code = _corpora(in_tmp)
    argv = _argv(in_tmp, _mix(web, code), "--set", "data.on_exhausted=drop")
    assert main([*argv, "--set", "train.steps=100000", "--set", "train.eval_every=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trainer: error: data.on_exhausted: with drop "), err
    most = int(err[0].split("use train.steps <= ")[1].split(",")[0])
    assert not (in_tmp / "run").exists()
    # The most steps it names is a run that finishes (every source given once, then dropped).
    steps = ["--set", f"train.steps={most}", "--set", "train.eval_every=0"]
    assert main([*argv, *steps, "--set", "train.checkpoint_every=0"]) == 0
