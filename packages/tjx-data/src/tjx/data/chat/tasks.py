"""A post-training task the project makes offline: two-number arithmetic as chat, with answers
that are right or wrong, and a ChatML tokenizer folder trained on its text.

``arithmetic`` (a `tjx.data` source name for ``data.format`` chat or preference) is rows
``{"messages": [user: "What is 37 + 58?", assistant: "95"]}``; as preference pairs, the chosen
answer is the right one and the rejected one a near miss (one off, ten off, or its digits
swapped); as prompts (for GRPO), ``{"prompt": [user turn], "answer": "95"}``, which the
``exact_answer`` reward (`tjx.data.rewards`) checks. The rows come from a seeded generator, so
every machine makes the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.cache import atomic_prepare, cache_dir

__all__ = [
    "ARITHMETIC",
    "CHATML_TEMPLATE",
    "arithmetic_rows",
    "prepare_arithmetic",
    "write_chatml_folder",
]

#: The built-in generated source's name.
ARITHMETIC = "arithmetic"
#: The row layouts the task is written in.
ARITHMETIC_KINDS = ("chat", "preference", "prompts")
#: Rows of the generated task (every 10th row is held out for validation).
ARITHMETIC_ROWS = 4000
_VERSION = 1
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
    if kind not in ARITHMETIC_KINDS:
        raise ValueError(f"arithmetic_rows: kind must be one of {ARITHMETIC_KINDS}; got {kind!r}")
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


def prepare_arithmetic(kind: str, folder: str | Path | None = None) -> Path:
    """The generated task's ``rows.jsonl`` for ``kind`` (made once in the cache), a local source
    whose validation split is every 10th row."""
    root = Path(folder) if folder is not None else cache_dir()

    def build(staging: Path) -> None:
        with open(staging / "rows.jsonl", "w", encoding="utf-8") as out:
            for row in arithmetic_rows(ARITHMETIC_ROWS, kind=kind):
                out.write(json.dumps(row) + "\n")

    return atomic_prepare(root / f"{ARITHMETIC}-{kind}-v{_VERSION}", build) / "rows.jsonl"


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
