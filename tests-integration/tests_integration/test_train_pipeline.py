"""Pipeline parallelism (``mesh.pipeline``) end to end, on 8 simulated CPU devices.

* GPT-2 and LLaMA: the trainer's pipelined loss (tjx.parallel.pipeline_loss wired to tjx.nn's
  scanned stack in trainer/step/train_step.py) gives the unpipelined loss and gradients, for 2 and 4
  stages alone and with data / FSDP, GPipe and 1F1B, on fresh random tokens. Tolerance (fp32):
  loss within 1e-5 relative; each gradient leaf within ``1e-5 * max|leaf| + 1e-9`` (sums over
  microbatches and devices in another order; a leaf whose true gradient is zero, like the
  attention key bias, is compared with the absolute term).
* The trainer with ``mesh.pipeline=2`` logs the losses of the same run without it (1e-5 relative,
  as the data-parallel test), for ``tiny`` (GPT-2) and a scaled-down ``llama_small``, and a
  checkpoint saved on the pipeline mesh resumes on a plain mesh and back (tjx-ckpt's resharding
  restore) with the uninterrupted run's losses. These runs call the trainer's ``main`` in this
  process (`call_train`): they are about the losses, not the command line, and a process each
  paid the interpreter's start and imports again.
* Bad pipeline settings: one error line, exit status 2, nothing written (the trainer's ``main``
  called in this process).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests_integration._helpers_apps import (
    SMALL,
    call_app,
    call_train,
    check_ok,
    final,
    train_losses,
)

VOCAB = 97
MODEL = [
    "model.scan_layers=true",
    "model.num_layers=4",
    "model.d_model=32",
    "model.num_heads=4",
    "model.mlp.dim=64",
    "model.max_seq_len=16",
    "data.seq_len=16",
    "data.batch_size=16",
    "eval.batch_size=16",
]
PRESETS = {
    "gpt2": ("tiny", []),
    "llama": (
        "llama_small",
        [
            f"model.vocab_size={VOCAB}",
            "model.num_kv_heads=2",
            "model.precision.compute_dtype=float32",
            "model.precision.logits_dtype=float32",  # the preset stores them in bf16 (#51)
        ],
    ),
}
_REFERENCE: dict[str, Any] = {}


def _loss_and_grads(model: str, sets: list[str]) -> tuple[float, Any]:
    from trainer import build_state, load_config, resolve, step_config
    from trainer.step import train_step as step

    preset, extra = PRESETS[model]
    cfg = resolve(load_config(preset, [*MODEL, *extra, *sets]), VOCAB)
    setup = build_state(step_config(cfg))
    loss_fn = step.make_loss_fn(setup.graphdef, setup.rest, setup.step_config)
    rng = np.random.default_rng(len(model))
    batch = {
        k: jnp.asarray(rng.integers(0, VOCAB, (16, 16)), jnp.int32) for k in ("inputs", "targets")
    }
    batch["targets"] = batch["targets"].at[0, :5].set(-100)  # some ignored targets too
    grad = jax.value_and_grad(lambda p: loss_fn(p, batch, jnp.int32(0)), has_aux=True)
    (loss, _), grads = jax.jit(grad)(setup.state.param_tree())
    return float(loss), jax.device_get(grads)


@pytest.mark.parametrize(
    ("model", "sets"),
    [
        ("gpt2", ["mesh.pipeline=2", "mesh.schedule=gpipe", "mesh.microbatches=4"]),
        ("gpt2", ["mesh.pipeline=4", "mesh.schedule=1f1b", "mesh.microbatches=8"]),
        ("gpt2", ["mesh.pipeline=2", "mesh.data=2", "mesh.fsdp=2", "mesh.strategy=fsdp",
                  "mesh.schedule=1f1b", "mesh.microbatches=2"]),
        ("llama", ["mesh.pipeline=2", "mesh.schedule=1f1b", "mesh.microbatches=4"]),
        ("llama", ["mesh.pipeline=4", "mesh.data=1", "mesh.fsdp=2", "mesh.strategy=fsdp",
                   "mesh.schedule=gpipe", "mesh.microbatches=2"]),
        ("llama", ["mesh.pipeline=4", "mesh.data=2", "mesh.schedule=gpipe",
                   "mesh.microbatches=4"]),
    ],
)  # fmt: skip
def test_pipelined_loss_and_grads_match(model: str, sets: list[str]) -> None:
    if model not in _REFERENCE:
        _REFERENCE[model] = _loss_and_grads(model, ["mesh.data=-1"])
    want_loss, want = _REFERENCE[model]
    loss, grads = _loss_and_grads(model, sets)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    paths = jax.tree_util.tree_flatten_with_path(want)[0]
    got_leaves = jax.tree.leaves(grads)
    assert len(got_leaves) == len(paths)
    for (path, w), g in zip(paths, got_leaves, strict=True):
        w, g = np.asarray(w), np.asarray(g)
        atol = 1e-5 * float(np.max(np.abs(w))) + 1e-9
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


RUN = [*SMALL, "model.scan_layers=true", "train.steps=4", "train.eval_every=4"]
PIPE = ["mesh.pipeline=2", "mesh.microbatches=2"]


def test_trainer_pipeline_matches_plain_and_checkpoints_move_between_meshes(tmp_path):
    plain = call_train(tmp_path, "plain", RUN)
    check_ok(plain)
    want = train_losses(tmp_path / "plain")
    assert sorted(want) == [1, 2, 3, 4]
    # One pipelined run (1F1B; GPipe, the default, is the LLaMA test's) that moves: saved on the
    # pipeline mesh (layers split over stages) → resumed on a plain mesh → resumed on the
    # pipeline mesh again. Its steps 1, 2 and 4 and its final evaluation ran pipelined, step 3
    # plain: each gives the uninterrupted plain run's loss. (An uninterrupted pipelined run
    # beside it would run the same pipelined steps and evaluation once more.)
    piped = [*RUN, *PIPE, "mesh.schedule=1f1b"]
    check_ok(call_train(tmp_path, "moved", [*piped, "train.stop_at=2"]))
    plain_resume = call_train(tmp_path, "moved", [*RUN, "train.stop_at=3"], "--resume")
    check_ok(plain_resume)
    assert "resumed from step 2" in plain_resume.stdout
    # The optimizer runs per leaf on the pipeline mesh and flat on the plain one (#51): the
    # checkpoint's state is converted, and said so.
    assert "optimizer state is per leaf; converted to flat buffers" in plain_resume.stdout
    back = call_train(tmp_path, "moved", piped, "--resume")
    check_ok(back)
    assert "resumed from step 3" in back.stdout
    assert "optimizer state is flat; converted to per leaf" in back.stdout
    moved = train_losses(tmp_path / "moved")
    assert sorted(moved) == [1, 2, 3, 4]
    for s in want:
        assert moved[s] == pytest.approx(want[s], rel=1e-5)
    assert final(tmp_path / "moved")["val_loss"] == pytest.approx(
        final(tmp_path / "plain")["val_loss"], rel=1e-5
    )


def test_llama_small_trains_pipelined_to_the_losses_of_the_plain_mesh(tmp_path):
    """``llama_small`` (scaled down: GQA, RoPE, RMSNorm, untied head) with ``mesh.pipeline=2``."""
    llama = [*RUN, "model.num_kv_heads=1", "model.precision.compute_dtype=float32"]
    llama += ["model.precision.logits_dtype=float32"]  # the preset's are bf16 (#51)
    llama += ["data.tokenizer=byte", "model.vocab_size=null"]  # no 50k-row embedding to train
    check_ok(call_train(tmp_path, "plain", llama, config="llama_small"))
    check_ok(call_train(tmp_path, "piped", [*llama, *PIPE], config="llama_small"))
    want, got = train_losses(tmp_path / "plain"), train_losses(tmp_path / "piped")
    assert sorted(want) == sorted(got) == [1, 2, 3, 4]
    for s in want:
        assert got[s] == pytest.approx(want[s], rel=1e-5)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["mesh.pipeline=3"], "the pipeline's 3 stages must divide the 2 layers"),
        (["mesh.pipeline=2", "mesh.microbatches=3"], "3 microbatches must divide the batch of 8"),
        (
            ["mesh.pipeline=2", "mesh.data=2"],
            "pipeline=2, data=2, fsdp=1, expert=1, context=1, tensor=1 has 4",
        ),
        (["mesh.pipeline=2", "model.scan_layers=false"], "needs model.scan_layers=true"),
        (["mesh.pipeline=2", "mesh.microbatches=4"], "a microbatch of 2 rows"),
        (["mesh.pipeline=2", "mesh.schedule=zigzag"], "mesh.schedule"),
    ],
)
def test_bad_pipeline_settings_exit_2_and_write_nothing(tmp_path, sets, needle):
    args = ["--config", "tiny", "--run-dir", "run"]
    for item in [*RUN, *sets]:
        args += ["--set", item]
    # The trainer's main in this process (test_bad_inputs runs its cases as processes too).
    proc = call_app("trainer", args, tmp_path)
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert needle in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sum("trainer: error:" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    assert list(tmp_path.iterdir()) == []
