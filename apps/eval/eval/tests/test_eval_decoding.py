"""Decoding options of tjx.nn the evaluator reaches: top-k sparse decode attention
(``--sparse-top-k``) and an MLA run's latent KV cache, on hand-made run directories."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from flax import nnx

from eval.cli import decoding_model, main
from eval.runs import load_run
from tjx import ckpt, data, nn

BASE = {
    "vocab_size": 257,
    "max_seq_len": 32,
    "d_model": 16,
    "num_layers": 2,
    "num_heads": 2,
    # At GPT-2's 0.02 the embeddings alone pick this tiny model's tokens, so attending to fewer
    # keys changes nothing visible; at 0.2 attention decides them (and top-k changes them).
    "init": {"std": 0.2},
    "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
}
PROMPT = "Line"


@pytest.fixture()
def make_run(tmp_path: Path) -> Callable[..., tuple[Path, Any]]:
    """A run directory (model.json + checkpoint + shards) of a GPT-2 with ``fields`` changed,
    and the model whose parameters its checkpoint holds (test_eval_inprocess's pattern)."""

    def make(**fields: Any) -> tuple[Path, Any]:
        tok = data.load_tokenizer("byte")
        docs = [f"Line {i}: what's in a name? that which we call a rose.\n" * 3 for i in range(30)]
        data.pretokenize(
            docs, tok, tmp_path / "shards", split="validation", num_workers=1, progress=False
        )
        described = {**BASE, **fields}
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.yaml").write_text("name: hand-made\n")
        (run / "model.json").write_text(json.dumps({"class": "GPT2Config", "fields": described}))
        info = {
            "tokenizer": "byte",
            "val_dir": str(tmp_path / "shards" / "validation"),
            "bytes_per_token": 1.0,
            "seq_len": 16,
            "cache_dir": str(tmp_path / "cache"),
        }
        (run / "data.json").write_text(json.dumps(info))
        config = nn.config_from_dict(
            {"class": "GPT2Config", "fields": {**described, "precision": "fp32"}}
        )  # a section as model.json holds it (a mapping): read as the run's evaluation reads it
        model = nn.GPT2(config, rngs=nnx.Rngs(3))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
        manager.save(3, state={"params": params, "step": np.int32(3)}, config={}, force=True)
        manager.close()
        return run, model

    return make


def _argv(run: Path, *extra: str) -> list[str]:
    flags = ["--max-batches", "1", "--batch-size", "2", "--attention-png", "none"]
    greedy = ["--generate", PROMPT, "--temperature", "0", "--max-new-tokens", "12"]
    return ["--checkpoint", str(run), *flags, *greedy, *extra]


def _sample(out: str) -> str:
    """The printed sample: the text after the ``--- sample (...) ---`` line."""
    return out.split(" new tokens) ---\n", 1)[1].rstrip("\n")


def _reference(model: Any, **changes: Any) -> str:
    """tjx.nn's greedy continuation of PROMPT by ``model``'s parameters in a model whose config
    has ``changes`` (decoding settings: the parameters are the same)."""
    config = model.config.replace(**changes)
    other = nn.GPT2(config, rngs=nnx.Rngs(0))
    nnx.update(other, nnx.state(model, nnx.Param))
    tok = data.load_tokenizer("byte")
    ids = tok.encode_batch([PROMPT])[0]
    out = nn.generate(other, np.asarray([ids], np.int32), max_new_tokens=12)
    return str(tok.decode([int(t) for t in np.asarray(out)[0]])).rstrip("\n")


def test_sparse_top_k_decodes_as_tjx_nn_top_k_attention(make_run, capsys):
    run, model = make_run()
    assert main(_argv(run, "--sparse-top-k", "1")) == 0
    out = capsys.readouterr().out
    assert "greedy, sparse top-k 1;" in out
    sparse = _sample(out)
    assert sparse == _reference(model, **{"attention.decode_topk": 1})
    # Without the flag the run decodes with every cached key (its model.json has no top-k).
    assert main(_argv(run)) == 0
    dense = _sample(capsys.readouterr().out)
    assert dense == _reference(model)
    assert sparse != dense  # the flag reached the attention: one key per head decodes otherwise
    # A K at least the cache's length keeps every key: the same tokens as dense decoding.
    assert main(_argv(run, "--sparse-top-k", "32")) == 0
    assert _sample(capsys.readouterr().out) == dense


def test_decoding_model_sets_top_k_in_every_attention_and_keeps_the_state(make_run):
    run_dir, _ = make_run()
    run = load_run(run_dir)
    assert decoding_model(run, None) is run.model
    sparse = decoding_model(run, 3)
    assert [m.decode_topk for m in _attentions(sparse)] == [3, 3]  # both layers
    assert [m.decode_topk for m in _attentions(run.model)] == [None, None]  # left as it was
    same = jax.tree.map(np.array_equal, nnx.state(sparse), nnx.state(run.model))
    assert all(jax.tree.leaves(same))


def _attentions(model: Any) -> list[Any]:
    return [m for _, m in nnx.iter_modules(model) if isinstance(m, nn.Attention)]


def test_the_runs_own_decode_topk_is_used_and_the_flag_overrides_it(make_run, capsys):
    run, model = make_run(attention={"decode_topk": 1})
    assert main(_argv(run)) == 0
    out = capsys.readouterr().out
    assert "sparse top-k 1;" in out and _sample(out) == _reference(
        model, **{"attention.decode_topk": 1}
    )
    assert main(_argv(run, "--sparse-top-k", "2")) == 0
    assert _sample(capsys.readouterr().out) == _reference(model, **{"attention.decode_topk": 2})


def test_an_mla_run_generates_from_its_latent_cache(make_run, capsys):
    run, model = make_run(attention={"type": "mla"}, mla={"kv_latent_dim": 4})
    assert main(_argv(run, "--sparse-top-k", "2")) == 0
    out = capsys.readouterr().out
    assert _sample(out) == _reference(model, **{"attention.decode_topk": 2})
    assert "loss" in out  # the held-out metrics ran on the MLA model too


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--sparse-top-k", "0"], "--sparse-top-k: must be >= 1, got 0"),
        (["--sparse-top-k", "-3"], "--sparse-top-k: must be >= 1, got -3"),
    ],
)
def test_bad_sparse_top_k_exits_2(tmp_path, capsys, extra, needle):
    # Checked before the run directory is read: no run needed.
    assert main(_argv(tmp_path, *extra)) == 2
    assert needle in capsys.readouterr().err


def test_sparse_top_k_without_generate_is_refused(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path), "--sparse-top-k", "4"]) == 2
    assert "--sparse-top-k: applies to --generate" in capsys.readouterr().err


def test_speculative_decoding_prints_greedy_tokens_and_the_drafts_acceptance(make_run, capsys):
    """``--speculative``: the MTP depth drafts, the model verifies in one two-token pass per
    step: plain greedy's sample, and the passes it took (each accepted draft saves one)."""
    run, model = make_run(mtp={"depths": 1})
    assert main(_argv(run, "--speculative")) == 0
    out = capsys.readouterr().out
    assert _sample(out) == _reference(model)
    found = re.search(
        r"speculative: (\d+) of (\d+) drafts accepted \(acceptance rate [\d.]+\); (\d+) "
        r"two-token verification passes of the model for 12 new tokens \(greedy: 11 one-token "
        r"passes\)",
        out,
    )
    assert found, out
    accepted, drafted, passes = int(found[1]), int(found[2]), int(found[3])
    assert 0 <= accepted <= drafted and drafted > 0
    assert passes == 12 - 1 - accepted  # one row: the prefill's token, then 1 or 2 per pass


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--temperature", "0.5"], "--speculative: drafts greedy decoding"),
        (["--chat"], "--speculative: drafts greedy decoding"),
    ],
)
def test_speculative_decoding_of_a_sampled_or_chat_reply_is_refused(
    tmp_path, capsys, extra, needle
):
    assert main([*_argv(tmp_path, "--speculative"), *extra]) == 2
    assert needle in capsys.readouterr().err


def test_speculative_decoding_without_an_mtp_module_is_one_line(make_run, capsys):
    run, _ = make_run()
    assert main(_argv(run, "--speculative")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "eval: error: --speculative: this model has no multi-token-prediction module to draft "
        "with (model.mtp.depths is 0); drop --speculative"
    ]
