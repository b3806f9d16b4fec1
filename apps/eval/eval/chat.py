"""``--generate PROMPT --chat``: one user turn through the run's chat template, the assistant's
reply up to its end-of-turn token.

The template is the run's own: a chat run's tokenizer folder (or the ChatML BPE the trainer
trained for ``data.tokenizer: bpe``, which its ``data.json`` names), or the tokenizer folder of a
text run or a Hugging Face checkpoint when it holds one. tjx.data renders it in its sandbox
(``ChatEncoder.encode_prompt``: the messages and the generation prompt, tokenized as training
tokenized them) and names the token a turn ends with (``end_of_turn_id``: ``<|im_end|>``,
``<|eot_id|>``); tjx.nn's ``generate`` stops there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval.runs import LoadedRun, RunError
from tjx import data, nn


def encoder_of(run: LoadedRun) -> Any:
    """tjx.data's `ChatEncoder` of the run's tokenizer and chat template.

    Raises
    ------
    RunError
        The run's tokenizer has no chat template (a built-in tokenizer, a folder without one),
        or the template's end-of-turn text is not one token.
    """
    encoder = getattr(run.run_data, "encoder", None)  # a chat run's (tjx.data's ChatRunData)
    spec = getattr(run.run_data, "tokenizer_spec", None)
    if encoder is None:
        no_template = (
            f"--chat: the run's tokenizer {spec!r} has no chat template; --chat needs a run "
            "trained with data.format=chat, or a tokenizer folder with one (chat_template.jinja "
            "or tokenizer_config.json's chat_template)"
        )
        if spec is None or spec in ("gpt2", "byte") or "://" in str(spec):
            raise RunError(no_template)
        try:
            encoder = data.ChatEncoder(run.tokenizer, data.ChatTemplate.from_folder(spec))
        except data.DataError:
            raise RunError(no_template) from None
    if encoder.end_of_turn_id is None:
        raise RunError(
            f"--chat: the chat template's end-of-turn text {encoder.eos_text!r} is not one token "
            "of the run's tokenizer, so a reply could not stop; set eos_token in the tokenizer "
            "folder's tokenizer_config.json"
        )
    return encoder


def prompt_ids(encoder: Any, text: str) -> np.ndarray:
    """``[1, n]`` int32 ids of ``text`` as one user turn and the assistant's generation prompt.

    Raises
    ------
    RunError
        The template fails to render it (tjx.data's error: the template and its line).
    """
    try:
        ids = encoder.encode_prompt([{"role": "user", "content": text}], where="--generate")
    except data.DataError as err:
        raise RunError(f"--chat: {err}") from None
    return np.asarray(ids, np.int32)[None, :]


def reply(
    model: Any, encoder: Any, ids: np.ndarray, *, max_new_tokens: int, **sampling: Any
) -> tuple[str, int, bool]:
    """The assistant's reply: (its text without the end-of-turn token, how many tokens were
    generated, whether it ended at the end-of-turn token)."""
    eos = int(encoder.end_of_turn_id)
    out = np.asarray(nn.generate(model, ids, max_new_tokens=max_new_tokens, eos_id=eos, **sampling))
    new = [int(t) for t in out[0, ids.shape[1] :]]
    stopped = eos in new
    tokens = new[: new.index(eos)] if stopped else new
    return encoder.tokenizer.decode(tokens), len(tokens) + int(stopped), stopped
