"""The trainer tests' smallest run of a preset: one layer of width 16 over 16-token rows in batches
of 8 (``--set`` overrides; a test puts its own after them)."""

TINY_RUN = [
    "model.d_model=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.mlp.dim=32",
    "model.max_seq_len=16",
    "data.seq_len=16",
    "data.batch_size=8",
    "eval.batch_size=8",
]

#: A two-step run of `TINY_RUN`, evaluated and sampled only after its last step (what the tests
#: of a run's end and of its signals break).
TWO_STEPS_THEN_EXTRAS = [
    *TINY_RUN,
    "train.steps=2",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "sampling.max_new_tokens=4",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]
