"""``python -m eval --tasks`` and ``python -m eval.lm_eval_cli --model tjx`` on the local tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from eval import harness
from eval.cli import main
from eval.tests.harness_support import TASK_DIR, TASKS, make_run, write_task_data
from tjx.core import standard_json


@pytest.fixture(scope="module")
def harness_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run and the local tasks' data for the module (each test only reads the run; the
    files a test writes beside it are its own: the results JSON, an exported folder)."""
    root = tmp_path_factory.mktemp("harness")
    run, _ = make_run(root)
    write_task_data(root, np.random.default_rng(1234))
    return run


@pytest.fixture()
def workdir(harness_run, monkeypatch):
    """The module's run, in its folder as the working folder (the YAMLs name the data
    relatively)."""
    monkeypatch.chdir(harness_run.parent)
    return harness_run


def _bare_token(token: str) -> None:
    raise AssertionError(f"the results file holds a bare {token}, which strict readers reject")


def test_all_local_tasks_run_end_to_end_and_write_json_next_to_the_run(workdir, capsys):
    argv = ["--checkpoint", str(workdir), "--tasks", ",".join(TASKS)]
    assert main([*argv, "--include-path", str(TASK_DIR), "--limit", "4", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    text = (workdir / "lm_eval_step1.json").read_text()
    json.loads(text, parse_constant=_bare_token)  # standard JSON: no NaN / Infinity tokens
    written = standard_json.loads_json(text)
    assert set(written["results"]) == set(TASKS)
    lam = written["results"]["local_lambada"]
    assert lam["perplexity,none"] > 1 and 0 <= lam["acc,none"] <= 1
    assert 0 < written["results"]["local_rolling"]["bits_per_byte,none"] < 20
    assert 1 <= written["tjx"]["compiles"] <= 2  # buckets of a 64-token model: 32, 64
    for task in TASKS:
        assert f"|{task}" in out  # the harness's table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tasks", "no_such_task"], "Tasks not found: no_such_task"),
        (["--tasks", "local_lambada", "--num-fewshot", "-1"], "--num-fewshot: must be >= 0"),
        (["--tasks", "local_lambada", "--limit", "0"], "--limit: must be > 0"),
        (["--num-fewshot", "2"], "--num-fewshot: applies to --tasks"),
        (["--tasks", "x", "--include-path", "nowhere"], "--include-path: no such folder"),
    ],
)
def test_bad_harness_flags_exit_2_and_write_nothing(workdir, capsys, flags, message):
    before = sorted(p.name for p in workdir.iterdir())
    assert main(["--checkpoint", str(workdir), "--include-path", str(TASK_DIR), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in workdir.iterdir()) == before


#: A task whose data cannot be read: a file its YAML names that is not there, and a hub dataset
#: with the hub out of reach (offline mode, as the tests run: HF_HUB_OFFLINE=1, pants.toml).
UNREADABLE = {
    "file": ("dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: not_written.jsonl\n",
             "FileNotFoundError"),
    "hub": ("dataset_path: tjx-tests/no-such-dataset\n", "ConnectionError"),
}  # fmt: skip


@pytest.mark.parametrize("where", sorted(UNREADABLE))
def test_a_task_whose_data_cannot_be_read_exits_2_in_one_line_and_writes_nothing(
    workdir, tmp_path, capsys, where
):
    """The harness builds a task by reading its data; what cannot be read is one line naming the
    task and the error (was: the harness's traceback, exit 1, after the model was built)."""
    dataset, error = UNREADABLE[where]
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "unreadable.yaml").write_text(
        f"task: unreadable_{where}\n{dataset}test_split: test\noutput_type: loglikelihood\n"
        'doc_to_text: "{{text}}"\ndoc_to_target: "{{text}}"\nmetric_list:\n  - metric: acc\n'
    )
    before = sorted(p.name for p in workdir.iterdir())
    argv = ["--checkpoint", str(workdir), "--tasks", f"unreadable_{where}"]
    assert main([*argv, "--include-path", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"eval: error: --tasks: unreadable_{where}: its data could not be")
    assert f"({error}: " in err[-1] and "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_a_bert_run_is_refused_with_exit_2(tmp_path, capsys, monkeypatch):
    fields = {"vocab_size": 258, "max_seq_len": 32, "d_model": 16, "num_layers": 1, "num_heads": 2}
    run, _ = make_run(tmp_path, model_json={"class": "BertConfig", "fields": fields})
    monkeypatch.chdir(tmp_path)
    argv = ["--checkpoint", str(run), "--tasks", "local_lambada", "--include-path", str(TASK_DIR)]
    assert main(argv) == 2
    assert "BERT masked-LM encoder" in capsys.readouterr().err
    assert not list(run.glob("lm_eval_*"))


def test_without_lm_eval_the_flag_says_what_to_install(workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)  # import fails as if not installed
    assert main(["--checkpoint", str(workdir), "--tasks", "local_lambada"]) == 2
    assert f"--tasks: needs lm-evaluation-harness; {harness.INSTALL}" in capsys.readouterr().err


def test_lm_eval_command_line_runs_the_tjx_model(workdir, tmp_path, monkeypatch, capsys):
    from eval import lm_eval_cli

    argv = [
        "lm_eval",
        "--model",
        "tjx",
        "--model_args",
        f"checkpoint={workdir}",
        "--tasks",
        "local_hellaswag,local_rolling",
        "--include_path",
        str(TASK_DIR),
        "--limit",
        "3",
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    monkeypatch.setattr(sys, "argv", argv)  # lm-eval's own parser reads the command line
    lm_eval_cli.main()
    out = capsys.readouterr().out
    assert "|local_hellaswag" in out and "|local_rolling" in out
    written = list((tmp_path / "out").rglob("results_*.json"))
    assert len(written) == 1
    assert set(json.loads(written[0].read_text())["results"]) == {
        "local_hellaswag",
        "local_rolling",
    }


def test_tasks_score_a_hugging_face_folder_with_its_own_tokenizer(workdir, capsys):
    """``--checkpoint HF_FOLDER --tasks``: no --data needed; the JSON lands in the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from eval.tests.harness_support import WORDS

    hf = workdir.parent / "hf"
    assert main(["--checkpoint", str(workdir), "--export-hf", str(hf)]) == 0
    # The run's byte tokenizer has no tokenizer.json form: give the folder a small BPE of its own
    # (at most the model's 257 ids), as a real HF folder would have.
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]", "<|endoftext|>"])
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    tok.save(str(hf / "tokenizer.json"))
    flags = ["--tasks", "local_lambada", "--include-path", str(TASK_DIR), "--limit", "4"]
    assert main(["--checkpoint", str(hf), *flags, "--batch-size", "4"]) == 0
    assert "|local_lambada" in capsys.readouterr().out
    written = json.loads((hf / "lm_eval_step0.json").read_text())
    assert written["results"]["local_lambada"]["perplexity,none"] > 1


def test_the_task_index_is_built_once_per_state_of_the_include_folder(tmp_path, monkeypatch):
    import lm_eval.tasks

    built: list[str | None] = []

    class Counting:
        def __init__(self, include_path: str | None = None) -> None:
            built.append(include_path)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", Counting)
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "a.yaml").write_text("task: a\n")
    harness._indexed.cache_clear()
    try:
        first = harness._indexed(str(folder), harness._yaml_stamp(str(folder)))
        assert harness._indexed(str(folder), harness._yaml_stamp(str(folder))) is first
        (folder / "b.yaml").write_text("task: b\n")  # a new task file: the folder indexes again
        assert harness._indexed(str(folder), harness._yaml_stamp(str(folder))) is not first
    finally:
        harness._indexed.cache_clear()  # no stand-in left for the tests after this one
    assert built == [str(folder), str(folder)]
