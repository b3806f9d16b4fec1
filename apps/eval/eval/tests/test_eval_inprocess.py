"""The evaluator in-process on a hand-made run directory (model.json + checkpoint + shards)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx
from tjx_damaged_hf import HOSTILE_HF, damage

from eval.cli import main
from tjx import ckpt, data, nn
from tjx.data.prepare import held_out


def _metric(text, name, column=0):
    line = next(ln for ln in text.splitlines() if ln.split() and ln.split()[0] == name)
    return float(line.split()[1 + column].replace(",", ""))  # counts print as 1,234


def test_metrics_match_a_float64_reference(run_dir, tmp_path, capsys):
    run, model = run_dir
    png = tmp_path / "attn.png"
    argv = [
        "--checkpoint",
        str(run),
        "--batch-size",
        "4",
        "--max-batches",
        "2",
        "--generate",
        "Line",
        "--max-new-tokens",
        "3",
        "--attention-png",
        str(png),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    total, count, hits = 0.0, 0, 0
    batches = data.validation_batches(run.parent / "shards" / "validation", 16, 4)
    for i, batch in enumerate(batches):
        if i == 2:
            break
        logits = np.asarray(model(jax.numpy.asarray(batch["inputs"])), np.float64)
        labels, mask = batch["targets"], batch["targets"] != -100
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ce = logz - np.take_along_axis(logits, np.where(mask, labels, 0)[..., None], -1)[..., 0]
        total += ce[mask].sum()
        count += mask.sum()
        hits += (logits.argmax(-1) == labels)[mask].sum()
    assert _metric(out, "loss") == pytest.approx(total / count, rel=1e-5)
    assert _metric(out, "top1") == pytest.approx(hits / count, abs=1e-4)
    assert _metric(out, "bits_per_byte") == pytest.approx(total / count / np.log(2), rel=1e-5)
    assert "run " in out and "at step 3" in out and "\nLine" in out
    assert png.is_file() and "attention distance per layer" in out


def test_compare_and_other_data(run_dir, tmp_path, capsys):
    """Two runs on other data: a folder, whose file of another type is named, not skipped."""
    run, _ = run_dir
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "other.txt").write_text("a rose by any other name would smell as sweet\n" * 20)
    (folder / "more.json").write_text('{"text": "by any other word"}\n')
    argv = [
        "--compare",
        str(run),
        str(run),
        "--data",
        str(folder),
        "--batch-size",
        "2",
        "--max-batches",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _header(out) == ["metric", "run@3", "run@3"]
    assert _metric(out, "loss", 0) == _metric(out, "loss", 1)
    note = f"note: --data: left out 1 file(s) of other types: {folder / 'more.json'} ("
    assert out.count(note) == 1  # once, for both runs


def test_other_rows_are_read_by_the_text_field_named(run_dir, tmp_path, capsys):
    """``--data`` rows whose text is in ``content`` score with ``--text-field content`` as the
    same text in ``text`` does; without it, one line names the flag and the rows' fields."""
    run, _ = run_dir
    rng = np.random.default_rng()
    lines = [f"line {int(i)}: a rose by any other name\n" * 3 for i in rng.integers(0, 99, 30)]
    for name, field in (("code.jsonl", "content"), ("web.jsonl", "text")):
        rows = "".join(json.dumps({field: t}) + "\n" for t in lines)
        (tmp_path / name).write_text(rows, encoding="utf-8")
    common = ["--checkpoint", str(run), "--batch-size", "2", "--max-batches", "2"]
    common += ["--attention-png", "none"]
    assert main([*common, "--data", str(tmp_path / "code.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"eval: error: --text-field: {tmp_path / 'code.jsonl'}: line 1: no string field 'text' "
        "(its string fields: content: name the one that holds the text)"
    )
    named = ["--data", str(tmp_path / "code.jsonl"), "--text-field", "content"]
    assert main([*common, *named]) == 0
    first = capsys.readouterr().out
    assert main([*common, "--data", str(tmp_path / "web.jsonl")]) == 0
    second = capsys.readouterr().out
    assert _metric(first, "loss") == _metric(second, "loss")
    assert _metric(first, "num_tokens") == _metric(second, "num_tokens") > 0
    assert main([*common, "--text-field", "content"]) == 2
    assert "--text-field: applies to --data" in capsys.readouterr().err


@pytest.mark.parametrize("written", [None, "none"])
def test_a_text_run_without_its_tokenizer_is_one_line(run_dir, capsys, written):
    """Image runs are scored (test_eval_images.py); a text run's data.json must name one."""
    run, _ = run_dir
    info = json.loads((run / "data.json").read_text())
    info["tokenizer"] = written
    (run / "data.json").write_text(json.dumps(info))
    assert main(["--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eval: error: --checkpoint: {str(run / 'data.json')!r} names no ")
    assert "Traceback" not in err


def test_a_tokenizer_that_does_not_load_is_one_line(run_dir, capsys):
    """data.json is read back by tjx.data (RunData.from_description); its errors name the file."""
    run, _ = run_dir
    info = json.loads((run / "data.json").read_text())
    info["tokenizer"] = str(run / "tokenizer" / "tokenizer.json")  # the saved copy was deleted
    (run / "data.json").write_text(json.dumps(info))
    assert main(["--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eval: error: --checkpoint: {str(run / 'data.json')!r}: tokenizer: ")
    assert "no such tokenizer file" in err and "Traceback" not in err


def _truncate_step(step_dir):
    """Cut every OCDBT data file of a checkpoint step in half (a crash mid-copy, a bad disk)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_a_corrupt_newest_checkpoint_falls_back_and_all_corrupt_is_one_line(run_dir, capsys):
    """Like the trainer's --resume: the newest intact step; none intact → one error line."""
    run, _ = run_dir
    other = nn.GPT2(
        nn.GPT2Config(
            vocab_size=257, max_seq_len=16, d_model=16, num_layers=2, num_heads=2, precision="fp32"
        ),
        rngs=nnx.Rngs(9),
    )
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    state = {"params": nnx.to_pure_dict(nnx.state(other, nnx.Param)), "step": np.int32(5)}
    manager.save(5, state=state, config={}, force=True)
    manager.close()
    _truncate_step(run / "checkpoints" / "5")
    argv = [
        "--checkpoint",
        str(run),
        *"--batch-size 4 --max-batches 1 --attention-png none".split(),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"run {run} at step 3" in captured.out
    # The fallback is one line (which step, why, which is used): no Python warning format.
    (line,) = captured.err.splitlines()
    assert line.startswith(
        f"eval: warning: tjx.ckpt: skipping corrupt checkpoint step 5 ({run / 'checkpoints' / '5'})"
    )
    assert line.endswith("; using step 3")
    _truncate_step(run / "checkpoints" / "3")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("eval: warning: tjx.ckpt: skipping corrupt checkpoint step") == 2
    assert err.splitlines()[-1].startswith("eval: error: no readable checkpoint")
    assert "Traceback" not in err and "CorruptCheckpointWarning" not in err


def test_a_bert_run_is_scored_on_masked_tokens(run_dir, capsys):
    """A BERT run (it used to crash on `segment_ids`): masked-LM loss over the tokens masked with
    the trainer's evaluation key, against a float64 reference of the same masking."""
    run, _ = run_dir
    fields = {
        "vocab_size": 258,  # the byte tokenizer's 257 ids + the [MASK] id the trainer adds
        "max_seq_len": 16,
        "d_model": 16,
        "num_layers": 2,
        "num_heads": 2,
        "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
    }
    (run / "model.json").write_text(json.dumps({"class": "BertConfig", "fields": fields}))
    (run / "config.yaml").write_text("train: {seed: 4, mlm_probability: 0.3}\n")
    model = nn.BERT(nn.BertConfig(**{**fields, "precision": "fp32"}), rngs=nnx.Rngs(5))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(5, state={"params": params, "step": np.int32(5)}, config={}, force=True)
    manager.close()
    assert main(["--checkpoint", str(run), "--batch-size", "4", "--max-batches", "2"]) == 0
    out = capsys.readouterr().out
    key = jax.random.key(4 + 1)
    total, count = 0.0, 0
    batches = data.validation_batches(run.parent / "shards" / "validation", 16, 4)
    for i, batch in enumerate(batches):
        if i == 2:
            break
        seg = jax.numpy.asarray(batch["segment_ids"])
        inputs, labels = nn.mlm_mask(
            jax.numpy.asarray(batch["inputs"]),
            key,
            mask_id=257,
            vocab_size=257,
            mask_prob=0.3,
            special_mask=seg <= 0,
        )
        pos = batch.get("positions")
        pos = None if pos is None else jax.numpy.asarray(pos)
        logits = np.asarray(model(inputs, attention_mask=seg, positions=pos), np.float64)
        labels, mask = np.asarray(labels), np.asarray(labels) != -100
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ce = logz - np.take_along_axis(logits, np.where(mask, labels, 0)[..., None], -1)[..., 0]
        total += ce[mask].sum()
        count += mask.sum()
    assert count > 0
    assert _metric(out, "loss") == pytest.approx(total / count, rel=1e-5)
    assert _metric(out, "num_tokens") == count
    assert f"{count:,} held-out masked tokens" in out and "bits_per_byte" not in out
    assert main(["--checkpoint", str(run), "--generate", "x"]) == 2
    assert "--generate: needs a decoder or encoder-decoder run" in capsys.readouterr().err


def test_a_seq2seq_run_is_scored_on_the_continued_half(run_dir, tmp_path, capsys):
    """An encoder-decoder run: loss over the second half of each window (float64 reference of the
    model fed the halves by hand), bits/byte (every continued token is scored), its scope note,
    a sample from the encoder-decoder, and no attention-distance plot (decoders only)."""
    run, _ = run_dir
    fields = {
        "vocab_size": 257,
        "max_seq_len": 16,
        "d_model": 16,
        "num_layers": 1,
        "num_heads": 2,
        "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
    }
    (run / "model.json").write_text(json.dumps({"class": "EncoderDecoderConfig", "fields": fields}))
    model = nn.EncoderDecoder(
        nn.EncoderDecoderConfig(**{**fields, "precision": "fp32"}), rngs=nnx.Rngs(6)
    )
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(6, state={"params": params, "step": np.int32(6)}, config={}, force=True)
    manager.close()
    png = tmp_path / "attn.png"
    argv = ["--checkpoint", str(run), "--batch-size", "4", "--max-batches", "2"]
    extra = ["--generate", "Line", "--max-new-tokens", "3", "--attention-png", str(png)]
    assert main([*argv, *extra]) == 0
    out = capsys.readouterr().out
    total, count = 0.0, 0
    for batch in list(data.validation_batches(run.parent / "shards" / "validation", 16, 4))[:2]:
        inputs, seg = jax.numpy.asarray(batch["inputs"]), jax.numpy.asarray(batch["segment_ids"])
        half = 16 // 2  # the encoder reads t[:8], the decoder t[7:16] and predicts t[8:17]
        logits = model(
            inputs[:, :half],
            inputs[:, half - 1 :],
            src_segment_ids=seg[:, :half],
            tgt_segment_ids=seg[:, half - 1 :],
        )
        logits, labels = np.asarray(logits, np.float64), batch["targets"][:, half - 1 :]
        mask = labels != -100
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ce = logz - np.take_along_axis(logits, np.where(mask, labels, 0)[..., None], -1)[..., 0]
        total += ce[mask].sum()
        count += mask.sum()
    assert _metric(out, "loss") == pytest.approx(total / count, rel=1e-5)
    assert _metric(out, "num_tokens") == count
    assert _metric(out, "bits_per_byte") == pytest.approx(total / count / np.log(2), rel=1e-5)
    assert f"{count:,} held-out tokens continuing the first half of their window" in out
    assert "--- sample (prompt 'Line'" in out
    assert not png.exists() and "attention distance" not in out


def test_data_file_is_tokenized_again_after_an_edit(run_dir, tmp_path, capsys, monkeypatch):
    """``--data ./notes.txt`` goes through tjx.data's shard cache like the trainer's data.source:
    its held-out tenth, and fresh shards once the file changes (stale shards were reused)."""
    from eval.runs import RunError, heldout_dir, load_run

    run, _ = run_dir
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    argv = ["--checkpoint", str(run), "--data", "./notes.txt", "--attention-png", "none"]
    counts = []
    for line in ("a rose by any other name\n", "would smell as sweet, so Romeo would\n"):
        notes.write_text(line * 40)
        assert main(argv) == 0
        counts.append(_metric(capsys.readouterr().out, "num_tokens"))
        shard_dir, bpt = heldout_dir(load_run(run), "./notes.txt")
        held = held_out([line * 40], "validation")[0]
        stream = data.load_index(shard_dir).read_all()
        assert bytes(stream[:-1].astype(np.uint8)).decode() == held  # the new text, + EOS
        assert bpt == pytest.approx(len(held) / (len(held) + 1))
    assert counts[0] != counts[1]
    with pytest.raises(RunError, match="^--data: no such file"):
        heldout_dir(load_run(run), "./missing.txt")


def test_compare_two_steps_of_one_run_and_a_labelled_top_p_sample(run_dir, capsys):
    run, _ = run_dir
    other = nn.GPT2(
        nn.GPT2Config(
            vocab_size=257, max_seq_len=16, d_model=16, num_layers=2, num_heads=2, precision="fp32"
        ),
        rngs=nnx.Rngs(8),
    )
    params = nnx.to_pure_dict(nnx.state(other, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(7, state={"params": params, "step": np.int32(7)}, config={}, force=True)
    manager.close()
    argv = ["--compare", f"{run}@3", f"{run}@7", "--batch-size", "2", "--max-batches", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert _header(out) == ["metric", "run@3", "run@7"]
    assert _metric(out, "loss", 0) != _metric(out, "loss", 1)  # two different parameter sets
    # --step applies to both sides of --compare when they name no step.
    assert main(["--compare", str(run), str(run), "--step", "3", "--max-batches", "1"]) == 0
    assert _header(capsys.readouterr().out) == ["metric", "run@3", "run@3"]
    argv = ["--checkpoint", str(run), "--max-batches", "1", "--attention-png", "none"]
    sample = ["--generate", "Line", "--max-new-tokens", "4", "--top-p", "0.9", "--seed", "2"]
    assert main([*argv, *sample]) == 0
    out = capsys.readouterr().out
    assert "--- sample (prompt 'Line'; temperature 0.8, top-p 0.9; seed 2; 4 new tokens) ---" in out
    assert main([*argv, "--generate", "x", "--top-p", "1.5"]) == 2
    assert "--top-p: must be in (0, 1]" in capsys.readouterr().err


def _header(out: str) -> list[str]:
    """The comparison table's header (after the attention choice's line)."""
    return next(line.split() for line in out.splitlines() if line.startswith("metric"))


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """A tiny Llama checkpoint saved whole (``one``) and in shards (``sharded``)."""
    config = nn.LlamaConfig(
        vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp=nn.MLPConfig(dim=24)
    )
    root = tmp_path_factory.mktemp("hf")
    model = nn.Llama(config, rngs=nnx.Rngs(0))
    nn.save_hf(model, root / "one")
    nn.save_hf(model, root / "sharded", max_shard_size="4KB")
    return root


@pytest.mark.parametrize(("how", "kind", "needle"), HOSTILE_HF, ids=[c[0] for c in HOSTILE_HF])
def test_a_damaged_hf_checkpoint_is_one_line_and_no_output(
    tmp_path, capsys, hf_saved, how, kind, needle
):
    import shutil

    folder = shutil.copytree(hf_saved / kind, tmp_path / "ck")
    damage(folder, how)
    (tmp_path / "held.txt").write_text("a line of held-out text\n" * 50)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["--checkpoint", str(folder), "--data", str(tmp_path / "held.txt")]) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"eval: error: --checkpoint: {folder}")
    assert needle in out.err and out.err.count("\n") == 1 and "Traceback" not in out.err
    assert out.out == ""  # nothing scored or printed
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
