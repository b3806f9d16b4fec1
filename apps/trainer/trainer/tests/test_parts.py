"""Run directory, signals and the data preparation through tjx.data."""

from __future__ import annotations

import os
import signal

import pytest
import yaml

from trainer import data_setup, rundir
from trainer.config import build_config
from trainer.schema import ConfigError
from trainer.signals import interrupted_exit, stop_on_signals


def test_rundir_files(tmp_path):
    run = tmp_path / "r"
    rundir.create(run, {"a": 1})
    assert yaml.safe_load((run / "config.yaml").read_text()) == {"a": 1}
    p = rundir.write_samples(run, 12, ["x", "y"], ["p", "q"])
    assert p.name == "step_0000012.txt" and "prompt 'q'" in p.read_text()
    rundir.write_final(run, {"step": 3})
    rundir.write_json(run, "model.json", {"k": 1})
    assert rundir.read_config(run) == {"a": 1}


def test_signal_sets_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as flag:
        assert not flag
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag and flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def _data_config(source, cache, **data):
    return build_config({"data": {"source": str(source), "cache_dir": str(cache), **data}})


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


def test_second_sigint_stops_now(capfd):
    called = []
    with stop_on_signals() as flag:
        flag._stop_now = lambda: called.append("now")  # what stop_on_signals(run_dir) installs
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.signal_name == "SIGINT" and not called
        assert "SIGINT: stopping after this step" in capfd.readouterr().err  # written to fd 2
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert called == ["now"]


def test_interrupted_exit_names_the_newest_committed_step(tmp_path, capfd):
    assert interrupted_exit(tmp_path) == 130
    assert "interrupted: stopped at once; no checkpoint was saved" in capfd.readouterr().err
    for name in ("2", "4", "6.orbax-checkpoint-tmp"):
        (tmp_path / rundir.CHECKPOINTS_DIR / name).mkdir(parents=True)
    assert interrupted_exit(tmp_path) == 130
    err = capfd.readouterr().err
    assert f"the last checkpoint is step 4 in {str(tmp_path)!r}; continue with --resume" in err


def test_final_json_is_replaced_whole(tmp_path):
    rundir.write_final(tmp_path, {"step": 1})
    rundir.write_final(tmp_path, {"step": 2})
    assert [p.name for p in tmp_path.iterdir()] == [rundir.FINAL_FILE]
    assert '"step": 2' in (tmp_path / rundir.FINAL_FILE).read_text()
