"""Command-line parsing for the evaluator: held-out metrics, samples, comparisons, attention."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from eval import harness, hf_checkpoint
from eval.runs import RunError, check_run_dir, heldout_dir, load_run, read_as, rebuilt
from tjx import ckpt, data
from tjx.ckpt import CheckpointError
from tjx.core import warning_lines
from tjx.core.lazy import lazy_imports

# They load JAX (seconds): `--help` and a bad flag answer first; each loads on first use.
with lazy_imports(globals()):
    from eval import attention_map, chat, heldout, reward
    from tjx import nn


def build_parser() -> argparse.ArgumentParser:
    """The evaluator's argument parser."""
    parser = argparse.ArgumentParser(prog="eval", description="Evaluate a tjx training run.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--checkpoint",
        metavar="RUN_DIR",
        help="a trainer run directory, or a Hugging Face checkpoint folder (scored with --data)",
    )
    target.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="two runs side by side; RUN@STEP picks a step (two steps of one run: r@100 r@200), "
        "--step applies to both",
    )
    parser.add_argument("--data", default=None, help="held-out text: built-in, hub name or path")
    parser.add_argument(
        "--text-field",
        default=None,
        help="with --data: the field or column of its rows that holds the text (default: the "
        "run's data.text_field)",
    )
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--generate", default=None, metavar="PROMPT", help="sample from PROMPT")
    parser.add_argument(
        "--chat",
        action="store_true",
        help="with --generate: PROMPT is a user turn, rendered with the run's chat template and "
        "its generation prompt; generation stops at the end-of-turn token and only the "
        "assistant's reply is printed",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="with --generate: new tokens (default 200); with a held-out reward: a completion's "
        "budget (default: the run's grpo.max_new_tokens, else 16)",
    )
    parser.add_argument(
        "--rewards",
        nargs="+",
        default=None,
        metavar="NAME",
        help="score greedy completions of the held-out prompts with these rewards (tjx.data's: "
        "exact_answer, format, length) instead of the held-out loss: a chat run's on its "
        "source's prompts (or --data's), a GRPO run's with other rewards than its own",
    )
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sparse-top-k",
        type=int,
        default=None,
        metavar="K",
        help="with --generate: each new token attends to only its K highest-scoring cached keys "
        "(tjx.nn's top-k decode attention; default: the run's model.attention.decode_topk, "
        "else all)",
    )
    parser.add_argument(
        "--speculative",
        action="store_true",
        help="with --generate --temperature 0: greedy decoding drafted by the model's "
        "multi-token-prediction depth 1 (DeepSeek-V3, GLM-4.5: model.mtp.depths >= 1) and "
        "verified by one two-token pass of the model per step, the same tokens as plain "
        "greedy; prints the drafts' acceptance rate and the passes (its speed against greedy: "
        "tools/bench_speculative.py; measured on CPU only so far)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=None, help="default: all batches")
    parser.add_argument(
        "--attention-png",
        default=None,
        help="where the attention-distance PNG goes "
        "(default: RUN_DIR/attention_distance.png; 'none' to skip)",
    )
    hf_checkpoint.add_arguments(parser)
    harness.add_arguments(parser)  # --tasks, --num-fewshot, --limit, --include-path
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.text_field is not None and (args.data is None or not args.text_field):
        what = "must name a field" if args.data is not None else "applies to --data"
        raise RunError(f"--text-field: {what}; give the held-out rows with --data")
    for name in ("max_new_tokens", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise RunError(f"--{name.replace('_', '-')}: must be >= 1")
    if args.max_batches is not None and args.max_batches < 1:
        raise RunError("--max-batches: must be >= 1")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise RunError(
            f"--temperature: must be a finite number >= 0 (0 = greedy); got {args.temperature}"
        )
    if args.top_k is not None and args.top_k < 1:
        raise RunError(f"--top-k: must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise RunError(f"--top-p: must be in (0, 1], got {args.top_p}")
    if args.sparse_top_k is not None:
        if args.sparse_top_k < 1:
            raise RunError(f"--sparse-top-k: must be >= 1, got {args.sparse_top_k}")
        if args.generate is None:  # it changes only decoding: alone it would do nothing
            raise RunError("--sparse-top-k: applies to --generate; give a prompt with --generate")
    if args.speculative and (args.generate is None or args.temperature != 0 or args.chat):
        raise RunError(
            "--speculative: drafts greedy decoding of a prompt; give --generate PROMPT with "
            "--temperature 0 (and no --chat)"
        )
    if args.chat and args.generate is None:
        raise RunError("--chat: applies to --generate; give the user's message with --generate")
    png = args.attention_png
    if png and png != "none" and not Path(png).expanduser().parent.is_dir():
        raise RunError(
            f"--attention-png: the folder of {png!r} does not exist; create it or choose another "
            "path"
        )
    hf_checkpoint.check_arguments(args)
    for run in [args.checkpoint] if args.checkpoint else list(args.compare):
        if args.checkpoint and hf_checkpoint.is_hf_folder(location(run)):
            if args.data is None and args.export_hf is None and args.tasks is None:
                raise RunError(
                    "--data: a Hugging Face checkpoint has no held-out split of its own; give "
                    "--data (a built-in name, hub name or path)"
                )
            continue
        check_run_dir(split_step(run, args.step)[0])
    _check_png_folder(args)


def _check_png_folder(args: argparse.Namespace) -> None:
    """The attention PNG's folder can be written into, found by writing a probe (tjx.ckpt's
    check): a read-only mount or an immutable run dir passes ``os.access`` as root, then
    fails only after the whole evaluation."""
    png = args.attention_png
    if png == "none" or not args.checkpoint:  # --compare writes no PNG
        return
    folder = Path(png).expanduser().parent if png else split_step(args.checkpoint, None)[0]
    try:
        ckpt.check_can_create(folder)
    except ckpt.NotCreatableError as err:
        raise RunError(
            f"--attention-png: {err}, or pass --attention-png none to skip the plot"
        ) from None


def location(target: str) -> Any:
    """A ``--checkpoint`` / ``--compare`` path: a local `Path`, or for a ``gs://`` / ``s3://``
    run directory tjx.ckpt's `epath.Path` (another scheme: tjx.ckpt's one-line error)."""
    if "://" in target:
        return ckpt.RunFolder(target).path
    return Path(target)


def split_step(target: str, default: int | None) -> tuple[Any, int | None]:
    """``"runs/x@200"`` → (runs/x, 200); no ``@STEP`` → (the path, ``default``)."""
    path, sep, step = target.rpartition("@")
    if not sep or not step.isdigit():
        return location(target), default
    return location(path), int(step)


def _metrics(run: Any, args: argparse.Namespace) -> dict[str, float]:
    if reward.scores_rewards(run, args.rewards):  # GRPO's measure: the held-out reward
        return reward.evaluate(
            run,
            rewards=args.rewards,
            source=args.data,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
        )
    return heldout.evaluate_run(
        run, source=args.data, batch_size=args.batch_size, max_batches=args.max_batches
    )


#: ``--generate``'s new tokens when ``--max-new-tokens`` is not given.
GENERATE_TOKENS = 200
#: Counts print as whole numbers (426,514), not as 426514.0000.
COUNT_KEYS = ("num_tokens", "num_images", "pairs", "prompts")


def _print_table(names: list[str], results: list[dict[str, float]]) -> None:
    keys = [k for k in results[0] if all(k in r for r in results)]
    width = max(12, *(len(n) for n in names))
    label = max(16, *(len(k) + 2 for k in keys))  # DPO's rewards/accuracies is 18 long
    print(f"{'metric':<{label}}" + "".join(f"{n:>{width + 2}}" for n in names))
    for key in keys:
        if key in COUNT_KEYS:
            row = "".join(f"{round(r[key]):>{width + 2},}" for r in results)
        else:
            row = "".join(f"{r[key]:>{width + 2}.4f}" for r in results)
        print(f"{key:<{label}}{row}")


def _check_scoreable(run: Any) -> None:
    """Every objective is scored here; a text run needs the tokenizer its data.json names."""
    if run.objective.unit != "images" and run.tokenizer is None:
        raise RunError(
            f"--checkpoint: {str(run.run_dir / 'data.json')!r} names no tokenizer, which a text "
            "run needs; the trainer writes it, so it was changed by hand"
        )


def _scope_note(run: Any, args: argparse.Namespace, results: dict[str, float]) -> str:
    """What the numbers above cover, and why the trainer's ``val_*`` differ from them."""
    if "prompts" in results:  # a held-out reward (eval.reward)
        return reward.scope(
            run, results, reward.spec(run, args.rewards, args.max_new_tokens), args.data
        )
    rows = "images" if run.objective.unit == "images" else "sequences"
    rows = "packed rows" if run.chat else rows
    if "pairs" in results:  # a preference run: DPO's metrics over pairs
        count, rows = results["pairs"], "pairs"
        reference = "the base, adapters off" if run.lora is not None else "its frozen copy"
        scores = f"preference pairs (DPO against the reference: {reference})"
    else:
        count = results["num_images" if run.objective.unit == "images" else "num_tokens"]
        scores = "assistant tokens (the trainer's loss mask)" if run.chat else run.objective.scores
    scope = f"{round(count):,} held-out {scores}"
    if args.data is not None:
        return f"({scope} of {args.data!r}, the run's tokenizer)"
    if args.max_batches is not None:
        return f"({scope}: the first {args.max_batches} batches of {args.batch_size})"
    train = run.config.get("train", {})
    batches, size = train.get("eval_batches"), run.config.get("eval", {}).get("batch_size")
    return (
        f"({scope}: the whole validation split; the trainer's val_* metrics use only its first "
        f"{batches} batches of {size} {rows}, so they differ a little)"
    )


def _attention(run: Any, args: argparse.Namespace) -> None:
    target = args.attention_png
    if target == "none" or run.objective.name != "lm":  # a decoder's self-attention
        return
    if run.data.get("format") == "prompts":  # GRPO's held-out rows are prompts, not text
        return
    path = Path(target) if target else run.run_dir / "attention_distance.png"
    # Four held-out rows: 4 × heads × seq_len mean distances per layer in each histogram.
    if run.chat:  # packed conversations, as the trainer's validation reads them
        chats: Any = run.run_data
        batch = next(iter(chats.validation_batches(4, 1)))
    else:
        shard_dir, _ = heldout_dir(run, args.data)
        batch = next(iter(data.validation_batches(shard_dir, int(run.data["seq_len"]), 4)))
    distances = attention_map.layer_distances(
        run.model, {k: np.asarray(v) for k, v in batch.items()}
    )
    attention_map.plot(distances, path, f"{run.run_dir.name} @ step {run.step}")
    means = ", ".join(f"{d.mean():.1f}" for d in distances)
    print(f"attention distance per layer (mean tokens): {means} → {path}")


def decoding_model(run: Any, sparse_top_k: int | None) -> Any:
    """``run.model``, or the same parameters in a model whose decoding keeps the top-k keys.

    tjx.nn's top-k decode attention is a model setting (``decode_topk``), not an argument of
    ``generate``: the model is rebuilt (abstractly) from the run's config with it set, and given
    the run's state, which that setting leaves the same.
    """
    if sparse_top_k is None:
        return run.model
    return rebuilt(run, run.nn_config.replace(**{"attention.decode_topk": sparse_top_k}))


def _generate(run: Any, args: argparse.Namespace) -> None:
    max_len = int(run.nn_config.max_seq_len)
    model = decoding_model(run, args.sparse_top_k)
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    if args.chat:
        _chat_reply(run, model, args, sampling)
        return
    # [1, n] int32; an empty prompt is the EOS id alone (a model continues from a token).
    ids, _ = data.encode_prompts(run.tokenizer, [args.generate])
    # As trained: a seq2seq model's encoder reads the prompt, its decoder continues it.
    if run.objective.name == "seq2seq":
        new = max(1, min(args.max_new_tokens or GENERATE_TOKENS, max_len - 1))
        tail = nn.generate_seq2seq(
            model,
            ids,
            decoder_prompts=ids[:, -1:],  # the last source token starts it
            max_new_tokens=new,
            seed=args.seed,
            **sampling,
        )
        out = np.concatenate([ids[:, :-1], np.asarray(tail)], axis=1)
    elif args.speculative:  # greedy, drafted by the MTP depth 1: plain greedy's tokens
        new = max(1, min(args.max_new_tokens or GENERATE_TOKENS, max_len - ids.shape[1]))
        spec = nn.generate_speculative(model, ids, max_new_tokens=new)
        out = np.asarray(spec.tokens)
        print(
            f"speculative: {spec.accepted} of {spec.drafted} drafts accepted "
            f"(acceptance rate {spec.acceptance_rate:.2f}); {spec.passes} two-token "
            f"verification passes of the model for {new} new tokens (greedy: {new - 1} "
            "one-token passes)"
        )
    else:
        new = max(1, min(args.max_new_tokens or GENERATE_TOKENS, max_len - ids.shape[1]))
        out = np.asarray(nn.generate(model, ids, max_new_tokens=new, seed=args.seed, **sampling))
    how = f"{_how(run, args)}; seed {args.seed}; {new} new tokens"
    print(f"--- sample (prompt {args.generate!r}; {how}) ---")
    print(run.tokenizer.decode([int(t) for t in np.asarray(out)[0]]))


def _how(run: Any, args: argparse.Namespace) -> str:
    """How a sample was decoded (the run's own sparse top-k when the flag leaves it)."""
    how = "greedy" if args.temperature == 0 else f"temperature {args.temperature:g}"
    return how + "".join(
        f", {name} {value:g}"
        for name, value in (
            ("top-k", args.top_k),
            ("top-p", args.top_p),
            # The run's own setting when the flag leaves it: the sample says how it was decoded.
            ("sparse top-k", args.sparse_top_k or run.nn_config.attention.decode_topk),
        )
        if value is not None
    )


def _chat_checks(run: Any, args: argparse.Namespace) -> Any:
    """``--generate --chat``'s prompt ids, checked before any scoring: a decoder run, a chat
    template that renders the turn, a reply that fits ``max_seq_len``."""
    if run.objective.name != "lm":
        raise RunError(f"--chat: needs a decoder run (a chat model), not {run.objective.name!r}")
    ids = chat.prompt_ids(chat.encoder_of(run), args.generate)
    max_len = int(run.nn_config.max_seq_len)
    if ids.shape[1] >= max_len:
        raise RunError(
            f"--generate: the rendered chat prompt is {ids.shape[1]} tokens, and the model reads "
            f"at most {max_len}; shorten the message"
        )
    return ids


def _chat_reply(run: Any, model: Any, args: argparse.Namespace, sampling: dict[str, Any]) -> None:
    encoder = chat.encoder_of(run)
    ids = _chat_checks(run, args)
    budget = args.max_new_tokens or GENERATE_TOKENS
    new = max(1, min(budget, int(run.nn_config.max_seq_len) - ids.shape[1]))
    text, count, stopped = chat.reply(
        model, encoder, ids, max_new_tokens=new, seed=args.seed, **sampling
    )
    end = f"ended at {encoder.eos_text}" if stopped else f"no {encoder.eos_text} in {new} tokens"
    print(f"--- reply (user {args.generate!r}; {_how(run, args)}; seed {args.seed}; {end}) ---")
    print(text)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and evaluate; exit code 2 on bad input. A Python warning on the
    way is one ``eval: warning: ...`` line (tjx.core's `warning_lines`), not Python's two."""
    with warning_lines("eval"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # orbax logs an absl WARNING for every read-only checkpoint directory it opens.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        _check(args)
        tasks = harness.check_arguments(args)
        if tasks:  # lm-evaluation-harness instead of the held-out metrics
            harness.run_tasks(args, tasks)
            return 0
        left = None if args.data is None else data.left_out_note([args.data])
        if left is not None:  # a folder's .json or .csv: named once, not skipped silently
            print(f"note: --data: {left}")
        if args.compare:
            runs = [read_as(load_run(*split_step(p, args.step)), args.text_field)
                    for p in args.compare]  # fmt: skip
            for one in runs:
                _check_scoreable(one)
            if len({reward.scores_rewards(one, args.rewards) for one in runs}) > 1:
                raise RunError(
                    "--compare: a GRPO run is scored by its held-out reward; give --rewards "
                    "(e.g. exact_answer) to score both runs by reward"
                )
            if len({one.data.get("format") == "preference" for one in runs}) > 1:
                raise RunError(
                    "--compare: a preference run's DPO loss is not another run's loss; compare "
                    "preference (DPO) runs with each other"
                )
            results = [_metrics(r, args) for r in runs]
            _print_table([f"{r.run_dir.name}@{r.step}" for r in runs], results)
            return 0
        run = read_as(hf_checkpoint.load_checkpoint(location(args.checkpoint), args.step),
                      args.text_field)  # fmt: skip
        if hf_checkpoint.is_hf_folder(location(args.checkpoint)):
            args.attention_png = args.attention_png or "none"  # never written into its folder
        if args.export_hf is not None:
            hf_checkpoint.export_run(run, args)
            return 0
        _check_scoreable(run)
        if args.chat:  # a template that cannot render: refused before anything is scored
            _chat_checks(run, args)
        if args.speculative and not run.nn_config.mtp.depths:
            raise RunError(
                "--speculative: this model has no multi-token-prediction module to draft with "
                "(model.mtp.depths is 0); drop --speculative"
            )
        print(f"run {run.run_dir} at step {run.step}")
        metrics = _metrics(run, args)
        _print_table([f"{run.run_dir.name}@{run.step}"], [metrics])
        print(_scope_note(run, args, metrics))
        if args.generate is not None:
            if not run.objective.decodes:
                model = (
                    "an image classifier" if run.objective.unit == "images" else "a BERT encoder"
                )
                raise RunError(f"--generate: needs a decoder or encoder-decoder run, not {model}")
            _generate(run, args)
        _attention(run, args)
    except (RunError, ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"eval: error: {err}", file=sys.stderr)
        return 2
    return 0
