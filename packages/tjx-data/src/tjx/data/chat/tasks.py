"""Post-training tasks the project makes offline, with answers that are right or wrong, and a
ChatML tokenizer folder trained on their text. Each is a `tjx.data` source name for
``data.format`` chat, preference or prompts (`GENERATED`):

- ``arithmetic``: ``{"messages": [user: "What is 37 + 58?", assistant: "95"]}``, two numbers in
  0..99 added or subtracted. A tiny model learns it slowly: each sum is a token of its own.
- ``reverse``: ``{"messages": [user: "Reverse: q w e r", assistant: "r e w q"]}``, 3 to 5
  letters. An easier skill (copying at fixed offsets) that a tiny model learns in a few hundred
  steps and that carries over to strings it never saw (26^3 + 26^4 + 26^5 of them, so held-out
  rows are new strings): the GRPO preset's task, whose SFT start lands in the 10-50 % band.
- ``reverse_long``: the same with 8 to 12 letters (`REVERSE_LONG_LENGTHS`; answers up to 12
  tokens and ``<|im_end|>``, so GRPO needs ``grpo.max_new_tokens`` ≥ 13). A harder skill:
  sft_tiny's 300 SFT steps end near 80 % held out where ``reverse`` reaches 100 %, which leaves
  RL and more SFT room to differ (the GRPO study's task, issue #72).

As preference pairs the chosen answer is the right one and the rejected one a near miss
(arithmetic: one off, ten off, or its digits swapped; reverse: the letters as given, or two of
the answer's swapped); as prompts (for GRPO), ``{"prompt": [user turn], "answer": "95"}``, which
the ``exact_answer`` reward (`tjx.data.rewards`) checks. The rows come from seeded generators,
so every machine makes the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.cache import atomic_prepare, cache_dir

__all__ = [
    "ARITHMETIC",
    "CHATML_TEMPLATE",
    "GENERATED",
    "REVERSE",
    "REVERSE_LONG",
    "REVERSE_LONG_LENGTHS",
    "arithmetic_rows",
    "prepare_arithmetic",
    "prepare_generated",
    "reverse_long_rows",
    "reverse_rows",
    "write_chatml_folder",
]

#: The generated arithmetic source's name.
ARITHMETIC = "arithmetic"
#: The generated letter-reversal source's name.
REVERSE = "reverse"
#: The generated long letter-reversal source's name, and its (fewest, most) letters.
REVERSE_LONG = "reverse_long"
REVERSE_LONG_LENGTHS = (8, 12)
#: The row layouts each generated task is written in.
TASK_KINDS = ("chat", "preference", "prompts")
#: Rows of each generated task (every 10th row is held out for validation).
TASK_ROWS = 4000
_VERSION = 1
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: Qwen2's ChatML layout without a default system turn: the assistant's ``<|im_end|>`` is trained.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _near_miss(answer: int, rng: np.random.Generator) -> int:
    text, sign = str(abs(answer)), -1 if answer < 0 else 1
    options = [answer + 1, answer - 1, answer + 10]
    if len(text) > 1 and text[-1] != text[-2]:  # the last two digits swapped: 47 for 74
        options.append(sign * int(text[:-2] + text[-1] + text[-2]))
    return int(options[int(rng.integers(len(options)))])


def arithmetic_rows(n: int, seed: int = 0, *, kind: str = "chat") -> Iterator[dict[str, Any]]:
    """``n`` rows of the task: ``kind`` ``"chat"`` (messages), ``"preference"`` (prompt,
    chosen, rejected as chat turns) or ``"prompts"`` (the user turn and the answer's text)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"arithmetic_rows: kind must be one of {TASK_KINDS}; got {kind!r}")
    rng = np.random.default_rng([seed, _VERSION])
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(0, 100, size=2))
        plus = bool(rng.integers(2))
        answer = a + b if plus else a - b
        prompt = [{"role": "user", "content": f"What is {a} {'+' if plus else '-'} {b}?"}]
        if kind == "chat":
            yield {"messages": [*prompt, {"role": "assistant", "content": str(answer)}]}
        elif kind == "prompts":
            yield {"prompt": prompt, "answer": str(answer)}
        else:
            wrong = str(_near_miss(answer, rng))
            yield {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": str(answer)}],
                "rejected": [{"role": "assistant", "content": wrong}],
            }


def _swap_two(letters: list[str], rng: np.random.Generator) -> list[str]:
    i, j = (int(x) for x in rng.choice(len(letters), size=2, replace=False))
    out = list(letters)
    out[i], out[j] = out[j], out[i]
    return out


def _other_letter(letter: str, rng: np.random.Generator) -> str:
    return _LETTERS[(_LETTERS.index(letter) + 1 + int(rng.integers(25))) % 26]


def reverse_rows(
    n: int, seed: int = 0, *, kind: str = "chat", lengths: tuple[int, int] = (3, 5)
) -> Iterator[dict[str, Any]]:
    """``n`` rows of the letter-reversal task ("Reverse: q w e" → "e w q", ``lengths`` = (fewest,
    most) letters, 3 to 5 by default), in ``kind``'s layout as `arithmetic_rows`; a rejected
    answer is never the right one."""
    if kind not in TASK_KINDS:
        raise ValueError(f"reverse_rows: kind must be one of {TASK_KINDS}; got {kind!r}")
    lo, hi = lengths
    if not 2 <= lo <= hi:
        raise ValueError(
            f"reverse_rows: lengths must be (fewest, most) letters with 2 <= fewest <= most; "
            f"got {lengths!r}"
        )
    rng = np.random.default_rng([seed, _VERSION, 1])
    for _ in range(n):
        size = int(rng.integers(lo, hi + 1))
        letters = [_LETTERS[int(i)] for i in rng.integers(0, 26, size=size)]
        answer = " ".join(reversed(letters))
        prompt = [{"role": "user", "content": "Reverse: " + " ".join(letters)}]
        if kind == "chat":
            yield {"messages": [*prompt, {"role": "assistant", "content": answer}]}
        elif kind == "prompts":
            yield {"prompt": prompt, "answer": answer}
        else:
            if len(set(letters)) == 1:
                # Every order of "a a a" is the answer: the near miss changes one letter. (A
                # swap never differs, and swapping until it did hung one row in ~2,000: stop 65.)
                wrong = list(letters)
                wrong[int(rng.integers(len(wrong)))] = _other_letter(letters[0], rng)
            else:
                # The letters as given (a palindrome's are the answer), else two of the answer's
                # swapped (which can swap two equal letters: then swap until it differs).
                wrong = letters if letters[::-1] != letters and rng.integers(2) else letters[::-1]
                while " ".join(wrong) == answer:
                    wrong = _swap_two(letters[::-1], rng)
            yield {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": " ".join(wrong)}],
            }


def reverse_long_rows(n: int, seed: int = 0, *, kind: str = "chat") -> Iterator[dict[str, Any]]:
    """`reverse_rows` with `REVERSE_LONG_LENGTHS` letters (the ``reverse_long`` source)."""
    return reverse_rows(n, seed, kind=kind, lengths=REVERSE_LONG_LENGTHS)


#: The generated sources by name: each a seeded row generator ``(n, seed, kind=...)``.
GENERATED: dict[str, Callable[..., Iterator[dict[str, Any]]]] = {
    ARITHMETIC: arithmetic_rows,
    REVERSE: reverse_rows,
    REVERSE_LONG: reverse_long_rows,
}


def prepare_generated(source: str, kind: str, folder: str | Path | None = None) -> Path:
    """The generated task ``source``'s ``rows.jsonl`` for ``kind`` (made once in the cache), a
    local source whose validation split is every 10th row."""
    rows = GENERATED[source]
    root = Path(folder) if folder is not None else cache_dir()

    def build(staging: Path) -> None:
        with open(staging / "rows.jsonl", "w", encoding="utf-8") as out:
            for row in rows(TASK_ROWS, kind=kind):
                out.write(json.dumps(row) + "\n")

    return atomic_prepare(root / f"{source}-{kind}-v{_VERSION}", build) / "rows.jsonl"


def prepare_arithmetic(kind: str, folder: str | Path | None = None) -> Path:
    """The arithmetic task's ``rows.jsonl`` for ``kind`` (`prepare_generated`)."""
    return prepare_generated(ARITHMETIC, kind, folder)


def write_chatml_folder(tokenizer: Any, folder: Path) -> Path:
    """``tokenizer`` (trained with `CHATML_SPECIALS`) saved in ``folder`` as a Hugging Face
    tokenizer folder with the ChatML template and ``<|im_end|>`` as its EOS."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(folder)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHATML_TEMPLATE,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder
