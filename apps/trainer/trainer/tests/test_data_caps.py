"""``data.max_tokens``: a cap below one batch is one line and exit 2 before anything is written;
a cap that fits prepares exactly that many tokens, in tjx.data's capped cache folder."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.cli import main
from trainer.config.schema import ConfigError
from trainer.config.typed import read_config
from trainer.step import data_setup


def test_a_cap_below_one_batch_exits_2_and_writes_nothing(in_tmp, capsys):
    sets = ["data.seq_len=16", "data.batch_size=4", "data.max_tokens=64"]
    argv = ["--config", "tiny"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trainer: error: data.max_tokens: 64 tokens")
    assert "(data.batch_size 4 × data.seq_len 16 + 1 = 65)" in err
    assert list(in_tmp.iterdir()) == []
    with pytest.raises(ConfigError, match=r"^data\.max_tokens: 0 is too small; allowed: >= 1$"):
        read_config({"data": {"max_tokens": 0}})


def test_a_cap_prepares_that_many_tokens(tmp_path):
    from tjx import data

    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(300)))
    cap = int(np.random.default_rng().integers(200, 2000))
    cfg = read_config(
        {
            "data": {
                "source": str(text),
                "cache_dir": str(tmp_path / "cache"),
                "tokenizer": "byte",
                "seq_len": 16,
                "batch_size": 4,
                "max_tokens": cap,
            }
        }
    )
    bundle = data_setup.prepare(cfg)
    assert data.load_index(bundle.train_dir).tokens == cap
    assert bundle.train_dir.parent.name.endswith(f"-max{cap}")
