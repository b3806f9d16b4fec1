"""``--replay RUN``: a finished, stopped or killed tiny run's steps re-run bit for bit from their
checkpoint, probed, and reported (#73); and ``--spikes`` finding a planted bad document.

The runs train in-process on local JSON Lines corpora (one document a line), so each document's
origin is its line; every replay is checked against the logged losses by the replay itself (a
step that differs ends it with exit 2), and its probes against the run's own logged norms and
loss (tolerances stated where they are compared).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

from tjx.ckpt.lock import LOCK_FILE
from tjx.metrics import read_jsonl
from trainer.cli import main
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config
from trainer.start.replay.request import PROBES, check_objective
from trainer.tests._tiny import TINY_RUN

#: The runs' settings: every step logged, a checkpoint every 4 (12 steps) or 30 (90 steps).
SETS = [
    *TINY_RUN,
    "train.log_every=1",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.sample_every=0",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "optimizer.schedule.warmup_steps=5",
]


def _corpus(path: Path, lines: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))


def _train(root: Path, corpus: Path | None, *sets: str) -> Path:
    argv = ["--config", "tiny", "--run-dir", str(root / "run")]
    argv += [] if corpus is None else ["--data", str(corpus)]
    for item in [*SETS, f"data.cache_dir={root / 'cache'}", *sets]:
        argv += ["--set", item]
    assert main(argv) == 0
    return root / "run"


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """12 steps of the tiny model, checkpoints at 4, 8 and 12, every loss logged."""
    root = tmp_path_factory.mktemp("replayed")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(["to", "be", "or", "not", "that"]) for _ in range(9))
             for _ in range(150)]  # fmt: skip
    _corpus(root / "corpus.jsonl", lines)
    return _train(root, root / "corpus.jsonl", "train.steps=12", "train.checkpoint_every=4")


def test_a_replay_is_bit_exact_and_its_probes_agree_with_the_run(tiny_run, capsys):
    """Steps 6–7 from step 4's checkpoint, while another trainer holds the run (a replay only
    reads it): each logged loss replayed bit for bit, the report's files written in their own
    folder and nothing of the run changed; each layer's gradient and update norms make up the
    run's logged global norms, and the per-token losses its loss."""
    before = _snapshot(tiny_run)
    with RunDir(tiny_run).lock().acquire():  # a live run's lock: the replay takes none
        assert main(["--replay", str(tiny_run), "--steps", "6:7"]) == 0
    out = capsys.readouterr().out
    assert "replay: restored step 4" in out
    assert "faithful: 3 logged losses replayed bit for bit" in out
    folder = tiny_run / "replay-6-7"
    assert sorted(p.name for p in folder.iterdir()) == [
        "exclude.yaml", "loss.png", "norms.png", "probes.json", "report.md",
    ]  # fmt: skip
    after = _snapshot(tiny_run)
    mine = ("replay-6-7/", LOCK_FILE)  # the report's folder, and the lock file the test took
    assert {k: v for k, v in after.items() if not k.startswith(mine)} == before
    logged = {r["step"]: r for r in read_jsonl(tiny_run / "metrics.jsonl") if "loss" in r}
    probes = json.loads((folder / "probes.json").read_text())["steps"]
    assert sorted(probes) == ["5", "6", "7"]
    for step in (6, 7):
        values, run = probes[str(step)], logged[step]
        assert values["loss"] == values["logged"] == run["loss"]  # bit for bit
        # the layers' norms are the run's global ones cut up: float32 sums, rtol 1e-5
        for probe, metric in (("grad_norms", "grad_norm"), ("update_norms", "update_norm")):
            total = np.sqrt(sum(v**2 for v in values[probe].values()))
            assert total == pytest.approx(run[metric], rel=1e-5), (probe, step)
        assert set(values["grad_norms"]) == {"embed", "pos_embed", "layer 0", "final_norm"}
        # one layer: its largest activation and attention logit, finite
        assert list(values["activation_max"]) == ["layer 0"]
        assert np.isfinite(values["attention_logit_max"]["layer 0"])
        # each row's mean token loss; their mean (every row full: 16 targets) is the step's loss
        rows = values["sequence_loss"]
        assert len(rows) == 8 and np.mean(rows) == pytest.approx(run["loss"], rel=1e-5)
    report = (folder / "report.md").read_text()
    assert "**Every one of the 3 logged losses in the range was replayed bit for bit**" in report
    assert "### Documents behind the loss" in report and "corpus.jsonl line " in report
    assert "### Tokens with the largest loss" in report and "![loss](loss.png)" in report
    excluded = yaml.safe_load((folder / "exclude.yaml").read_text())["data"]["exclude"]
    assert excluded and all(isinstance(n, int) for n in excluded)
    for png in ("loss.png", "norms.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_killed_run_replays_from_its_start(tiny_run, tmp_path, capsys):
    """A run killed after step 12 was logged, before its checkpoint (and with a torn last log
    line), replays from its start (no checkpoint before step 1) through step 12, bit for bit;
    the report goes to --out."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints" / "12")
    (run / "final.json").unlink()
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 13, "time": 1.0, "lo')  # what a kill mid-write leaves
    out = tmp_path / "report"
    argv = ["--replay", str(run), "--steps", "1:12", "--probe", "documents", "--out", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "replay: from the run's start (step 0)" in said
    assert "faithful: 12 logged losses replayed bit for bit" in said
    assert (out / "report.md").is_file() and not (run / "replay-1-12").exists()
    values = json.loads((out / "probes.json").read_text())["steps"]
    assert "grad_norms" not in values["3"] and len(values["3"]["sequence_loss"]) == 8


def test_a_replay_run_elsewhere_than_its_relative_source_was_read_says_so(
    tiny_run, tmp_path, monkeypatch, capsys
):
    """The run as if trained with ``--data ./corpus.jsonl`` in its own folder's parent: a replay
    run in another folder, where that path names nothing, is one line that says where the run
    read it, before anything is prepared."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["source"] = "./corpus.jsonl"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    described = json.loads((run / "data.json").read_text())
    described.update(source="./corpus.jsonl", read_in=str(tiny_run.parent))
    (run / "data.json").write_text(json.dumps(described))
    monkeypatch.chdir(tmp_path)
    assert main(["--replay", str(run), "--steps", "5:5"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "trainer: error: data.source: no such file or folder './corpus.jsonl'; data.source "
        "./corpus.jsonl is a path relative to the folder a command runs in: the run read it in "
        f"{tiny_run.parent}, this command runs in {tmp_path}; run it from {tiny_run.parent} to "
        "read the run's files"
    ]


def test_spikes_name_the_planted_document_first(tmp_path, capsys):
    """A corpus of one plain sentence a line with a stretch of random characters planted at one
    line: the spike detector (train.spike_sigma) marks the steps whose batch holds it,
    ``--spikes`` replays them bit for bit, and each step's report names the planted line first;
    the run then resumes around it with the suggested data.exclude."""
    rng = random.Random()  # fresh random bytes: any stretch of them is unlike the text
    planted = "".join(rng.choice("QZXJKVWYqzxjkvwy0123456789#%&@$") for _ in range(40))
    lines = ["the cat sat on the mat."] * 220
    lines[117] = planted  # line 118 of the file
    corpus = tmp_path / "corpus.jsonl"
    _corpus(corpus, lines)
    sets = ["train.steps=90", "train.checkpoint_every=30", "train.spike_sigma=4",
            "train.spike_window=8"]  # fmt: skip
    run = _train(tmp_path, corpus, *sets)
    marked = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss_spike" in r]
    assert marked, "no spike marked"
    capsys.readouterr()
    out = tmp_path / "spikes"
    assert main(["--replay", str(run), "--spikes", "--out", str(out)]) == 0
    assert "replayed bit for bit" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    sections = report.split("\n## Step ")[1:]
    assert [int(s.split("\n")[0]) for s in sections] == marked
    for section in sections:
        first = section.split("### Documents behind the loss")[1].split("\n| 1 | ")[1]
        number, where = first.split(" | ")[:2]
        assert where.endswith(f"corpus.jsonl line 118 (byte {_byte(corpus, 118)})"), first
    excluded = yaml.safe_load((out / "exclude.yaml").read_text())["data"]["exclude"]
    assert excluded == [int(number)]
    # The run goes on around the document: a resume with data.exclude is accepted.
    argv = ["--config", str(run / "config.yaml"), "--run-dir", str(run), "--resume",
            "--set", "train.steps=92", "--set", f"data.exclude={excluded}"]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"data.exclude [] → {excluded}" in said and "done: 92 steps" in said


def _byte(path: Path, line: int) -> str:
    """The byte offset (as the report writes it) where 1-based ``line`` of ``path`` starts."""
    lines = path.read_bytes().split(b"\n")[: line - 1]
    return f"{sum(len(x) + 1 for x in lines):,}"


def test_a_scanned_mixture_replays_with_the_probes_that_apply(tmp_path, capsys):
    """A run of a scanned two-layer stack on a weighted mixture of two sources replays bit for
    bit; its layers are probed one by one (the stacked parameters cut per layer), its default
    probes leave out those that name one source's documents, and asking for one is one line,
    exit 2."""
    for name, word in (("a", "alpha beta"), ("b", "one two three")):
        _corpus(tmp_path / f"{name}.jsonl", [f"{word} {i}" for i in range(120)])
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    mixture = f"data.sources=[{{source: {a}}}, {{source: {b}, weight: 2}}]"
    scanned = ("model.scan_layers=true", "model.num_layers=2")
    run = _train(tmp_path, None, "train.steps=6", "train.checkpoint_every=4", mixture, *scanned)
    capsys.readouterr()
    assert main(["--replay", str(run), "--steps", "5:6"]) == 0
    assert "faithful: 2 logged losses replayed bit for bit" in capsys.readouterr().out
    report = (run / "replay-5-6" / "report.md").read_text()
    assert "grad_norms (" in report and "documents (" not in report
    values = json.loads((run / "replay-5-6" / "probes.json").read_text())["steps"]["6"]
    layers = ["layer 0", "layer 1"]
    assert list(values["activation_max"]) == list(values["attention_logit_max"]) == layers
    assert {"layer 0", "layer 1"} <= set(values["grad_norms"])
    assert len(set(values["activation_max"].values())) == 2  # each layer its own
    assert main(["--replay", str(run), "--steps", "5:6", "--probe", "documents"]) == 2
    assert "this run reads the mixture data.sources" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "sets", "kept", "refused", "message"),
    [
        ("tiny", ["mesh.context=2"], ("grad_norms", "update_norms"), "documents", "splits them"),
        ("sft_tiny", [], ("grad_norms", "update_norms", "activations", "attention", "tokens"),
         "documents", "documents does not apply to SFT"),
        ("dpo_tiny", [], ("grad_norms", "update_norms"), "attention",
         "attention does not apply to DPO"),
        ("grpo_tiny", [], ("grad_norms", "update_norms"), "tokens",
         "tokens does not apply to GRPO"),
        ("tiny", ["model.kind=bert"], None, None, "the run trains mlm (bert)"),
    ],
    ids=["context-split", "sft", "dpo", "grpo", "bert"],
)  # fmt: skip
def test_what_a_run_cannot_replay_is_one_line(preset, sets, kept, refused, message):
    """The probes a run's layout or objective cannot take are left out by default and refused
    when asked for; an objective a replay does not cover (BERT's) is refused, named."""
    cfg = read_config(apply_overrides(load_config_data(preset), sets))
    if kept is None:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_objective(cfg, tuple(PROBES), asked=False)
        return
    assert check_objective(cfg, tuple(PROBES), asked=False) == kept
    with pytest.raises(ConfigError, match=message):
        check_objective(cfg, (refused,))
