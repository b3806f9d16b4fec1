"""Hugging Face checkpoints in the evaluator: score and sample one directly, export a run as one.

``--checkpoint HF_FOLDER`` (a folder with ``config.json``, not a trainer run) loads the model
through ``tjx.nn.load_hf`` and its tokenizer (the folder's ``tokenizer.json``) through tjx.data;
it has no held-out split of its own, so metrics need ``--data``. ``--export-hf OUT`` writes a
trainer run's latest (or ``--step``) parameters with ``tjx.nn.save_hf`` and the run's tokenizer
as ``tokenizer.json`` next to them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from eval.runs import LoadedRun, RunError, load_run, started_as
from tjx import data
from tjx.core.lazy import lazy_imports

with lazy_imports(globals()):  # it loads JAX: the command line checks its flags first
    from tjx import nn

#: The longest held-out sequence scored for a HF model (its max_seq_len if shorter).
HF_SEQ_LEN = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The export flags (``--checkpoint`` takes a HF folder as it is)."""
    parser.add_argument(
        "--export-hf",
        default=None,
        metavar="OUT",
        help="write the run's parameters as a Hugging Face checkpoint folder (config.json, "
        "model.safetensors, tokenizer.json) that transformers loads, then exit",
    )
    parser.add_argument(
        "--export-dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="with --export-hf: the weights' dtype on disk (default: the run's param dtype)",
    )
    parser.add_argument(
        "--export-model-type",
        default=None,
        choices=("llama", "mistral", "qwen2", "qwen3_next", "qwen3_5_moe_text"),
        help="with --export-hf, for a Llama run: the HF model_type to write (default: the "
        "family of the model's switches: qwen2 when only q/k/v have biases, else llama; a run "
        "started from a Qwen3.5-MoE folder as qwen3_5_moe_text, whose switches are Qwen3-Next's)",
    )
    parser.add_argument(
        "--max-shard-size",
        default="5GB",
        help="with --export-hf: split the weights into shards above this size (e.g. 500MB)",
    )


def is_hf_folder(path: Path) -> bool:
    """A folder with ``config.json`` and no trainer ``config.yaml``: a HF checkpoint."""
    return (path / "config.json").is_file() and not (path / "config.yaml").exists()


def check_arguments(args: argparse.Namespace) -> None:
    """Raise `RunError` on export flags that do not fit the rest of the command line."""
    if args.export_hf is None:
        for flag in ("export_dtype", "export_model_type"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                raise RunError(f"{name}: applies to --export-hf; give --export-hf OUT")
        return
    if args.checkpoint is None:
        raise RunError("--export-hf: exports one run; give it with --checkpoint RUN_DIR")
    out = Path(args.export_hf).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"--export-hf: {str(out)!r} exists and is not empty; choose a new folder")
    if is_hf_folder(Path(args.checkpoint)):
        raise RunError("--export-hf: --checkpoint is already a Hugging Face folder")


def load_checkpoint(path: Path, step: int | None) -> LoadedRun:
    """``--checkpoint``'s target loaded: a HF folder (step 0) or a trainer run at ``step``."""
    if is_hf_folder(path):
        return load_hf_run(path)
    return load_run(path, step)


def load_hf_run(folder: Path) -> LoadedRun:
    """A HF checkpoint folder as a `LoadedRun` (step 0, no config; its tokenizer loaded)."""
    try:
        model, config = nn.load_hf(folder)
    except ValueError as err:
        raise RunError(f"--checkpoint: {err}") from None
    if not (folder / "tokenizer.json").is_file():
        raise RunError(
            f"--checkpoint: {str(folder)!r} has no tokenizer.json; scoring and sampling need "
            "the model's tokenizer (save it there with tokenizer.save_pretrained)"
        )
    seq_len = min(int(config.max_seq_len), HF_SEQ_LEN)
    info = {"source": "", "tokenizer": str(folder), "seq_len": seq_len}
    try:
        run_data = data.RunData.from_description(info)
    except data.DataError as err:
        raise RunError(f"--checkpoint: {err}") from None
    if run_data.vocab_size > config.vocab_size:
        raise RunError(
            f"--checkpoint: the tokenizer's {run_data.vocab_size} ids exceed the model's "
            f"vocab_size {config.vocab_size}"
        )
    return LoadedRun(folder, {}, {"seq_len": seq_len}, config, model, 0, run_data)


def export_run(run: LoadedRun, args: argparse.Namespace) -> None:
    """Write ``run`` as a HF checkpoint folder ``args.export_hf`` (and its tokenizer)."""
    out = Path(args.export_hf).expanduser()
    try:
        files = nn.save_hf(
            run.model,
            out,
            dtype=args.export_dtype,
            max_shard_size=args.max_shard_size,
            model_type=args.export_model_type or nn.hf_export_type(started_as(run.run_dir)),
        )
    except ValueError as err:
        raise RunError(f"--export-hf: {err}") from None
    save = getattr(run.tokenizer, "save", None)
    if save is not None:  # an HF tokenizer: transformers reads its tokenizer.json
        files.append(Path(save(out)).name)
    else:
        spec = getattr(run.run_data, "tokenizer_spec", None)
        print(f"note: the run's tokenizer ({spec}) has no tokenizer.json form")
    files += _chat_files(run, out)
    names = ", ".join(files)
    print(f"exported {run.run_dir}@{run.step} as a Hugging Face checkpoint: {out} ({names})")


#: A chat run's tokenizer files besides tokenizer.json: its chat template and special tokens, so
#: transformers' ``apply_chat_template`` renders the exported model's conversations as trained.
CHAT_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _chat_files(run: LoadedRun, out: Path) -> list[str]:
    """Copy a chat run's template files (``CHAT_FILES`` its tokenizer folder has) into ``out``."""
    folder = getattr(run.run_data, "tokenizer_dir", None)
    if folder is None:
        return []
    copied = []
    for name in CHAT_FILES:
        if (Path(folder) / name).is_file():
            shutil.copyfile(Path(folder) / name, out / name)
            copied.append(name)
    return copied
