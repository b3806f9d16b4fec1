import io
import json
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rich.console import Console

from tjx.metrics import (
    LOGGER_NAMES,
    ConsoleLogger,
    JsonlLogger,
    Logger,
    MultiLogger,
    TensorBoardLogger,
    make_logger,
    read_jsonl,
    resolve_wandb_mode,
    select_weights,
)
from tjx.metrics.loggers import base as base_module
from tjx.metrics.loggers.console import format_scalar
from tjx.metrics.loggers.wandb_logger import WandbLogger, wandb_api_key_configured

from ._readers import read_wandb_records, tb_values, wandb_history


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-such-netrc"))


def test_console_one_line_per_step(capsys):
    rng = np.random.default_rng(0)
    loss = float(rng.uniform(2, 4))
    with make_logger(["console"], "unused-run-dir") as logger:
        logger.log_scalars(
            jnp.int32(120),
            {
                "loss": jnp.float32(loss),
                "learning_rate": 3e-4,
                "tokens_per_s": 45123.0,
                "mfu": 0.3821,
                "skipped": jnp.bool_(False),
                "unknown_mfu": None,
            },
        )
        logger.log_scalars(240, {"loss": float("nan")})
        logger.log_histograms(240, {"w": rng.normal(size=10)})  # console ignores histograms
        logger.log_text(240, "sample", "[bold]not markup[/bold]\nsecond line")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    first = lines[0]
    assert first.startswith("step     120")
    for part in (
        f"loss {loss:.4g}",
        "learning_rate 3.00e-04",
        "tokens_per_s 45.1k",
        "mfu 38.2%",
        "skipped 0",
    ):
        assert part in first, (part, first)
    assert "unknown_mfu" not in first
    assert "loss nan" in lines[1]
    assert "sample: [bold]not markup[/bold]⏎ second line" in lines[2]


def test_console_keys_and_formatting():
    buf = io.StringIO()
    logger = ConsoleLogger(
        keys=["lr", "loss"], console=Console(file=buf, width=300), max_text_chars=5
    )
    logger.log_scalars(1, {"loss": 1.5, "lr": 1e-5, "hidden": 7})
    logger.log_text(1, "t", "abcdefghij")
    logger.flush()
    out = buf.getvalue().splitlines()
    assert out[0].index("lr 1.00e-05") < out[0].index("loss 1.5") and "hidden" not in out[0]
    assert out[1].endswith("t: abcde…")
    assert format_scalar("total_tokens", 12_345_678) == "12.3M"
    assert format_scalar("steps", 1234) == "1,234"
    assert format_scalar("x", 123456.0) == "1.23e+05"
    assert format_scalar("x", 0.0) == "0"
    assert format_scalar("x", True) == "1"
    with pytest.raises(ValueError, match="max_text_chars"):
        ConsoleLogger(max_text_chars=0)


def test_a_console_line_of_a_run_of_known_length_shows_its_step_of_the_total_and_the_time_left(
    monkeypatch,
):
    """``step N/total`` first, the keys in the order asked, then ``ETA`` at the rate since the
    first line (which would count a compilation, so it shows none); never a second line."""
    from tjx.metrics.loggers import console as console_module

    clock = iter([0.0, 100.0, 110.0, 130.0])  # construction, then one reading per line
    monkeypatch.setattr(console_module.time, "monotonic", lambda: next(clock))
    buf = io.StringIO()
    keys = ["loss", "learning_rate", "grad_norm"]
    logger = ConsoleLogger(keys=keys, console=Console(file=buf, width=300), total_steps=600)
    rng = np.random.default_rng()
    for step in (10, 20, 40):
        logger.log_scalars(step, {"grad_norm": 0.5, "loss": float(rng.uniform(1, 5)), "x": 1.0})
        logger.log_scalars(step, {"val_loss": 2.0})  # none of the keys: no line, no clock read
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("step 10/600 │ loss ")
    assert [ln.split(" │ ")[1].split()[0] for ln in lines] == ["loss"] * 3
    assert "learning_rate" not in lines[0] and "x 1" not in lines[0] and "ETA" not in lines[0]
    assert lines[0].index("loss") < lines[0].index("grad_norm 0.5")
    # 10 steps in 10 s since the first line: 580 steps left are 580 s.
    assert lines[1].endswith(" │ ETA 0:09:40"), lines[1]
    # 30 steps in 30 s: 560 left.
    assert lines[2].endswith(" │ ETA 0:09:20"), lines[2]


def test_jsonl_read_back(tmp_path):
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(8, 4)).astype(np.float32)
    weights[0, 0] = np.nan
    with make_logger("jsonl", tmp_path) as logger:
        for step in (10, 20):
            logger.log_scalars(step, {"loss": jnp.float32(step / 7), "num": jnp.int32(step)})
        logger.log_histograms(20, {"w": jnp.asarray(weights), "b": jnp.ones(3, jnp.bfloat16)})
        logger.log_text(20, "sample", "once upon a time")
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 20, 20]
    assert records[0]["loss"] == pytest.approx(10 / 7, rel=1e-6)
    assert records[1]["num"] == 20 and isinstance(records[1]["num"], int)
    hist = records[2]["histograms"]["w"]
    good = weights[np.isfinite(weights)].astype(np.float64)
    assert hist["count"] == 32 and hist["nonfinite"] == 1
    assert hist["mean"] == pytest.approx(good.mean(), rel=1e-6)
    assert hist["min"] == pytest.approx(good.min()) and hist["max"] == pytest.approx(good.max())
    assert records[2]["histograms"]["b"]["std"] == 0.0
    assert records[3]["text"] == {"sample": "once upon a time"}
    # Appending: a resumed run continues the same file.
    with JsonlLogger(tmp_path / "metrics.jsonl") as again:
        again.log_scalars(30, {"loss": math.inf})
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["loss"] == math.inf


def test_jsonl_errors(tmp_path):
    path = tmp_path / "log.jsonl"
    logger = JsonlLogger(path)
    with pytest.raises(ValueError, match="reserved"):
        logger.log_scalars(1, {"time": 1.0})
    logger.close()
    logger.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        logger.log_scalars(1, {"loss": 1.0})
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # torn last line: skipped
    assert read_jsonl(path) == [{"step": 1, "loss": 2.0}]
    path.write_text('{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match=":1: not valid JSON"):
        read_jsonl(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="JSON object"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


def test_tensorboard_read_back(tmp_path):
    rng = np.random.default_rng(2)
    values = rng.normal(size=1000).astype(np.float32)
    with make_logger(["tensorboard"], tmp_path, config={"model": "gpt2", "lr": 3e-4}) as logger:
        logger.log_scalars(1, {"loss": jnp.float32(3.25), "lr": 1e-4})
        logger.log_scalars(2, {"loss": 2.5})
        logger.log_histograms(
            2, {"blocks.0.w": jnp.asarray(values), "all_nan": jnp.full(3, jnp.nan)}
        )
        logger.log_text(2, "sample", "the quick brown fox")
    got = tb_values(tmp_path / "tensorboard")
    assert got["loss"] == [(1, 3.25), (2, 2.5)]
    assert got["lr"][0][0] == 1 and got["lr"][0][1] == pytest.approx(1e-4)
    ((step, histo),) = got["blocks.0.w"]
    assert step == 2 and histo.num == 1000
    assert histo.min == pytest.approx(values.min()) and histo.max == pytest.approx(values.max())
    assert histo.sum == pytest.approx(values.sum(), rel=1e-4, abs=1e-3)
    assert "all_nan" not in got  # nothing finite to bin: skipped rather than crashing the run
    # tensorboardX stores text under "<tag>/text_summary" (TensorBoard's text plugin).
    assert got["sample/text_summary"] == [(2, "the quick brown fox")]
    config_text = got["config/text_summary"][0][1]
    assert json.loads(config_text.replace("\n    ", "\n")) == {"lr": 3e-4, "model": "gpt2"}


def test_wandb_offline_without_key_warns_and_writes_run(tmp_path, monkeypatch, no_wandb_key):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    for var in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))  # keep $HOME clean
    assert resolve_wandb_mode() == "offline"
    rng = np.random.default_rng(3)
    losses = [float(x) for x in rng.uniform(1, 5, size=3)]
    with pytest.warns(UserWarning, match=r"written offline.*wandb sync"):
        logger = make_logger(
            ["wandb"], tmp_path, project="tjx-test", config={"seed": 7}, run_name="unit"
        )
    with logger:
        for step, loss in enumerate(losses):
            logger.log_scalars(step, {"loss": jnp.float32(loss)})
        logger.log_histograms(2, {"w": jnp.asarray(rng.normal(size=50))})
        logger.log_text(2, "sample", "hello")
        logger.log_text(3, "sample", "world")
    run_dirs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    (run_file,) = run_dirs[0].glob("run-*.wandb")
    # wandb-core (a separate process) may still be flushing the file when finish() returns on a
    # loaded machine: wait for the run's final "exit" record (bounded).
    deadline = time.monotonic() + 60
    records = read_wandb_records(run_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, "W&B run file never got its exit record"
        time.sleep(0.2)
        records = read_wandb_records(run_file)
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history"} <= kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "tjx-test" and run.display_name == "unit"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["seed"] == 7
    history = wandb_history(records)
    logged = [(int(h["_step"]), float(h["loss"])) for h in history if "loss" in h]
    assert logged == [(i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(losses)]
    (hist,) = (h for h in history if h.get("w/_type") == '"histogram"')
    assert int(hist["_step"]) == 2 and sum(json.loads(hist["w/values"])) == 50
    tables = list(run_dirs[0].glob("files/media/table/sample_*.table.json"))
    last = max(tables, key=lambda p: len(json.loads(p.read_text())["data"]))
    assert json.loads(last.read_text())["data"] == [[2, "hello"], [3, "world"]]


def test_wandb_modes(tmp_path, monkeypatch, no_wandb_key):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert len(make_logger(["wandb", "jsonl"], tmp_path)) == 1  # W&B off: not created at all
    monkeypatch.setitem(sys.modules, "wandb", None)  # W&B missing must not matter when off
    assert len(make_logger(["wandb"], tmp_path, wandb_mode="disabled")) == 0
    with pytest.raises(ImportError, match=r"pip install tjx-metrics\[wandb\]"):
        WandbLogger(tmp_path, mode="offline")
    with pytest.raises(ValueError, match="no W&B API key"):
        make_logger(["wandb"], tmp_path, wandb_mode="online")
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_wandb_mode("sometimes")
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("offline") == "offline"
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode() == "online"


def test_wandb_key_from_netrc(tmp_path):
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    netrc_file.chmod(0o600)
    assert wandb_api_key_configured({"NETRC": str(netrc_file)})
    assert not wandb_api_key_configured(
        {"NETRC": str(netrc_file), "WANDB_BASE_URL": "https://wandb.example.com"}
    )
    assert not wandb_api_key_configured({"NETRC": str(tmp_path / "absent")})
    assert wandb_api_key_configured({"WANDB_API_KEY": "k", "NETRC": str(tmp_path / "absent")})


def test_tensorboard_missing_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"pip install tjx-metrics\[tensorboard\]"):
        TensorBoardLogger(tmp_path)


def test_unknown_logger_name_lists_known(tmp_path):
    with pytest.raises(
        ValueError, match="unknown logger 'mlflow'.*console, jsonl, wandb, tensorboard"
    ):
        make_logger(["console", "mlflow"], tmp_path)
    with pytest.raises(ValueError, match="strings"):
        make_logger([3], tmp_path)  # type: ignore[list-item]
    assert LOGGER_NAMES == ("console", "jsonl", "wandb", "tensorboard")
    assert len(make_logger("jsonl, jsonl,", tmp_path)) == 1
    assert not (tmp_path / "tensorboard").exists()


def test_one_device_get_per_log_call(tmp_path, monkeypatch):
    calls = []
    real = jax.device_get

    def counting(tree):
        calls.append(tree)
        return real(tree)

    monkeypatch.setattr(base_module.jax, "device_get", counting)
    logger = make_logger(["jsonl", "console"], tmp_path)
    metrics = {f"m{i}": jnp.float32(i) for i in range(20)}
    logger.log_scalars(jnp.int32(5), metrics)
    assert len(calls) == 1  # the step and the whole dict at once — not one per value
    logger.log_histograms(jnp.int32(5), {"a": jnp.ones(3), "b": jnp.zeros(2)})
    assert len(calls) == 2
    logger.close()


def test_scalar_and_histogram_validation(tmp_path):
    logger = make_logger(["jsonl"], tmp_path)
    with pytest.raises(ValueError, match="'v' must be a numeric scalar"):
        logger.log_scalars(1, {"v": jnp.ones(3)})
    with pytest.raises(ValueError, match="non-empty strings"):
        logger.log_scalars(1, {1: 2.0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="mapping"):
        logger.log_scalars(1, [("loss", 1.0)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step"):
        logger.log_scalars(-1, {"loss": 1.0})
    with pytest.raises(ValueError, match="step"):
        logger.log_scalars(1.5, {"loss": 1.0})
    with pytest.raises(ValueError, match="numeric"):
        logger.log_histograms(1, {"s": np.array(["a"])})
    with pytest.raises(ValueError, match="mapping"):
        logger.log_histograms(1, [1.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="histogram names"):
        logger.log_histograms(1, {"": np.ones(2)})
    with pytest.raises(ValueError, match="text key"):
        logger.log_text(1, "", "x")
    with pytest.raises(ValueError, match="text must be a string"):
        logger.log_text(1, "k", 5)  # type: ignore[arg-type]
    logger.log_scalars(np.float64(2.0), {"loss": 1.0})  # whole-number float steps are fine
    logger.close()
    assert read_jsonl(tmp_path / "metrics.jsonl")[-1]["step"] == 2


class Exploding(Logger):
    def __init__(self):
        self.closed = False

    def _write_scalars(self, step, scalars):
        raise RuntimeError("backend down")

    def close(self):
        self.closed = True


def test_fan_out_survives_a_failing_child(tmp_path):
    bad, good = Exploding(), JsonlLogger(tmp_path / "log.jsonl")
    multi = MultiLogger([bad, good])
    with pytest.raises(RuntimeError, match="backend down"):
        multi.log_scalars(1, {"loss": 1.0})
    multi.log_histograms(1, {"w": np.ones(2)})  # base no-ops for a backend without histograms
    multi.log_text(1, "k", "v")
    multi.flush()
    multi.close()
    assert bad.closed
    assert read_jsonl(tmp_path / "log.jsonl")[0]["loss"] == 1.0


def test_make_logger_non_primary_process_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert len(make_logger(["jsonl", "console"], tmp_path)) == 0
    assert not (tmp_path / "metrics.jsonl").exists()
    assert len(make_logger(["jsonl"], tmp_path, primary_only=False)) == 1


def test_select_weights():
    params = {
        "blocks": [{"attn": {"kernel": jnp.ones((2, 2))}, "mlp": {"kernel": jnp.zeros(3)}}],
        "embed": jnp.ones(4),
        "meta": "not an array",
    }
    picked = select_weights(params, [r"attn", r"^embed$"])
    assert sorted(picked) == ["blocks.0.attn.kernel", "embed"]
    assert select_weights(params, "mlp.kernel").keys() == {"blocks.0.mlp.kernel"}


def test_config_to_dict_and_host_helpers():
    import dataclasses

    from tjx.metrics.loggers.base import config_to_dict, histograms_to_host, scalars_to_host

    @dataclasses.dataclass
    class Cfg:
        lr: float = 1e-3
        dtype: object = jnp.bfloat16

    assert config_to_dict(Cfg())["lr"] == 1e-3
    assert isinstance(config_to_dict(Cfg())["dtype"], str)  # not JSON-able → its str()
    assert config_to_dict(None) == {}
    assert config_to_dict(type("Obj", (), {"__init__": lambda self: setattr(self, "a", 1)})()) == {
        "a": 1
    }
    with pytest.raises(ValueError, match="config must be"):
        config_to_dict(42)
    assert scalars_to_host({"a": jnp.float32(1.5), "b": None, "c": np.int64(3)}) == {
        "a": 1.5,
        "c": 3,
    }
    hist = histograms_to_host({"w": jnp.ones((2, 3), jnp.bfloat16)})
    assert hist["w"].dtype == np.float32 and hist["w"].shape == (6,)


def test_make_logger_closes_created_backends_when_a_later_one_fails(tmp_path, monkeypatch):
    # A missing package is refused before any backend is built (test_logger_packages.py); here
    # the package is there and the backend itself fails (e.g. its folder cannot be written).
    pytest.importorskip("tensorboardX")

    def fail(self, *args, **kwargs):
        raise OSError("tensorboard: cannot write the event file")

    monkeypatch.setattr(TensorBoardLogger, "__init__", fail)
    closed = []
    real_close = JsonlLogger.close

    def spy(self):
        closed.append(self.path)
        real_close(self)

    monkeypatch.setattr(JsonlLogger, "close", spy)
    with pytest.raises(OSError, match="tensorboard"):
        make_logger(["jsonl", "tensorboard"], tmp_path)
    assert closed == [tmp_path / "metrics.jsonl"]
