"""Run directory and the data preparation through tjx.data (signals: test_signals.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError
from trainer.config.typed import read_config
from trainer.loop.evaluation import format_samples
from trainer.step import data_setup


def test_samples_file(tmp_path):
    # The layout and the writes are RunDir's (tests/job/test_folder.py); the sample text is ours.
    run = RunDir(tmp_path / "r")
    run.create({"a": 1})
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"a": 1}
    p = run.write_samples(12, format_samples(["x", "y"], ["p", "q"]))
    assert p == run.path / "samples" / "step_0000012.txt"
    assert p.read_text() == "--- sample 0 (prompt 'p') ---\nx\n\n--- sample 1 (prompt 'q') ---\ny\n"
    run.write_json(RunDir.MODEL_FILE, {"k": 1})
    assert json.loads((run.path / "model.json").read_text()) == {"k": 1}
    assert run.latest_step() is None


def _data_config(source, cache, **data):
    return read_config({"data": {"source": str(source), "cache_dir": str(cache), **data}})


def test_prepare_uses_the_shards_of_tjx_data(tmp_path):
    """The trainer's shards are tjx.data's (the evaluator's --data finds the same folder)."""
    from tjx import data

    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
    cfg = _data_config(text, tmp_path / "cache", tokenizer="byte", seq_len=16)
    bundle = data_setup.prepare(cfg)
    shards = data.prepare_shards(str(text), bundle.tokenizer, tmp_path / "cache")
    assert (bundle.train_dir, bundle.val_dir) == (shards.dirs["train"], shards.dirs["validation"])
    assert shards.held_out and bundle.bytes_per_token == shards.bytes_per_token["validation"]


def test_data_errors_name_the_config_key(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    cfg = _data_config(tmp_path / "empty.txt", tmp_path / "cache", tokenizer="byte")
    with pytest.raises(ConfigError, match=r"^data\.source: empty dataset"):
        data_setup.prepare(cfg)
    cfg = _data_config(tmp_path / "empty.txt", tmp_path / "cache", tokenizer="bpe")
    with pytest.raises(ConfigError, match=r"^data\.source: "):
        data_setup.make_tokenizer(cfg)


def test_trained_bpe_keeps_its_cache_folder(tmp_path):
    """``data.tokenizer: bpe`` is cached where the trainer always kept it, so old caches load."""
    from tjx.data.prepare import slug

    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat\n" * 50)
    cfg = _data_config(text, tmp_path / "cache", tokenizer="bpe", tokenizer_vocab=300)
    tok = data_setup.make_tokenizer(cfg)
    folder = tmp_path / "cache" / "tokenizers" / f"{slug(str(text))}-bpe300"
    assert (folder / "tokenizer.json").is_file()
    assert data_setup.make_tokenizer(cfg).fingerprint == tok.fingerprint


def test_each_bad_value_names_its_config_key(tmp_path):
    """tjx.data's checks, worded by the key the user sets (its messages name tjx.data's argument
    names, which the trainer maps; nothing parses the text)."""
    import numpy as np

    rng = np.random.default_rng()
    text = tmp_path / "corpus.txt"
    lines = (" ".join(map(str, rng.integers(0, 99, 9))) for _ in range(40))
    text.write_text("\n".join(lines))  # one document: its last tenth is held out (~100 bytes)

    def config(model=None, **data):
        data = {"source": str(text), "cache_dir": str(tmp_path / "c"), "tokenizer": "byte", **data}
        return read_config({"data": data, "model": model or {}})

    with pytest.raises(ConfigError, match=r"^model\.vocab_size: 100 is smaller .*use >= 257"):
        data_setup.prepare(config({"vocab_size": 100}))
    with pytest.raises(ConfigError, match=r"^data\.source: .* \(data\.seq_len \+ 1 = 251\)"):
        data_setup.prepare(config(seq_len=250))
    bundle = data_setup.prepare(config(seq_len=16))
    with pytest.raises(ConfigError, match=r"^data\.batch_size: .*lower data\.batch_size or data"):
        data_setup.train_loader(bundle, config(seq_len=16, batch_size=10_000))
    with pytest.raises(ConfigError, match=r"^data\.tokenizer: no such tokenizer"):
        data_setup.prepare(config(tokenizer="./missing/tokenizer.json"))
    vit = {"kind": "vit", "image_size": 16, "num_channels": 1}
    with pytest.raises(ConfigError, match=r"^model\.image_size: 16 does not match .* \(8\)"):
        data_setup.prepare(read_config({"data": {"source": "digits"}, "model": vit}))
    with pytest.raises(ConfigError, match=r"^data\.source: image runs read 'digits'"):
        data_setup.prepare(read_config({"data": {"source": str(text)}, "model": {"kind": "vit"}}))
    grey = {"kind": "vit", "image_size": 8, "patch_size": 2}  # tjx-nn's default: 3 channels
    with pytest.raises(ConfigError, match=r"^model\.num_channels: the digits images are grey"):
        data_setup.prepare(read_config({"data": {"source": "digits"}, "model": grey}))
    digits = read_config(
        {
            "data": {"source": "digits", "batch_size": 5000},
            "model": vit | {"image_size": 8, "patch_size": 2},
        }
    )
    with pytest.raises(ConfigError, match=r"^data\.batch_size: batch_size must be in \[1, 1437\]"):
        data_setup.train_loader(data_setup.prepare(digits), digits)
