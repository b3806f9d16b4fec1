"""Rows of chat and preference datasets → token ids and the mask of the tokens a model learns.

Accepted rows (the formats of Hugging Face's chat and preference datasets):

=====================  =====================================================  =====================
kind                   row                                                    trained tokens
=====================  =====================================================  =====================
conversation           ``{"messages": [{"role", "content"}, ...]}``           every assistant turn
chat prompt/completion ``{"prompt": [messages], "completion": [messages]}``   the completion's
                                                                              assistant turns
plain prompt/compl.    ``{"prompt": str, "completion": str}``                 completion + EOS
preference             ``{"prompt", "chosen", "rejected"}``, each messages    chosen / rejected
                       or each a string                                       completion
=====================  =====================================================  =====================

Chat rows are rendered with the tokenizer folder's template (`ChatTemplate`) and tokenized
without added special tokens (the template writes them), as transformers' ``apply_chat_template``
does; the assistant's characters become tokens by transformers' rule (``char_to_token`` of a
span's first and last character, every token between). Plain text is tokenized as
``tokenizer(text)`` does (the tokenizer's post-processor may add e.g. a BOS), with the EOS text
appended to a completion that does not end with it.

A preference pair's completions follow TRL's ``DPOTrainer``: the prompt alone (with the
generation prompt, for chat) and prompt + completion are tokenized; the completion is what
follows their longest common prefix (the shorter of the chosen's and the rejected's), so a
tokenizer that merges across the boundary still gives one shared prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tjx.data.chat.template import ChatTemplate, Message
from tjx.data.errors import DataError
from tjx.data.tokenizers import HFTokenizer, Tokenizer

__all__ = ["ChatEncoder", "Encoded", "Pair", "common_prefix"]


@dataclass(frozen=True)
class Encoded:
    """One sequence: int64 ``ids`` and bool ``mask`` (True: a token the model learns to write)."""

    ids: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Pair:
    """A preference pair: the prompt followed by the chosen, and by the rejected completion."""

    chosen: Encoded
    rejected: Encoded


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, Mapping) for m in value)


class ChatEncoder:
    """Encodes rows (see the module docstring) with one tokenizer and chat template.

    Parameters
    ----------
    tokenizer : HFTokenizer
        A Hugging Face tokenizer (its offsets map the assistant's characters to tokens).
    template : ChatTemplate, optional
        Needed for chat rows; plain prompt/completion rows do without.
    messages_field : str
        The column holding a conversation's messages.

    Raises
    ------
    DataError
        A tokenizer without character offsets (the byte tokenizer).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: ChatTemplate | None = None,
        *,
        messages_field: str = "messages",
    ) -> None:
        if not isinstance(tokenizer, HFTokenizer):
            raise DataError(
                "chat data needs a Hugging Face tokenizer (a folder with tokenizer.json and a "
                f"chat template); got {getattr(tokenizer, 'name', type(tokenizer).__name__)!r}",
                argument="tokenizer",
            )
        self.tokenizer = tokenizer
        self.template = template
        self.messages_field = messages_field
        special = template.eos_token if template is not None else None
        #: The text that ends a plain completion: the template's EOS, else the tokenizer's.
        self.eos_text: str = special or tokenizer.eos_token

    # -- pieces ------------------------------------------------------------------------------
    def _template(self, where: str) -> ChatTemplate:
        if self.template is None:
            raise DataError(
                f"{where}: a chat row needs a chat template; give the tokenizer folder of a chat "
                "model (tokenizer_config.json with chat_template, or chat_template.jinja)",
                argument="tokenizer",
            )
        return self.template

    def _plain_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.tokenizer.encode(text, add_special_tokens=True).ids)

    def _check_messages(self, messages: Any, where: str, what: str) -> list[Message]:
        if not _is_messages(messages) or not messages:
            raise DataError(
                f"{where}: {what} must be a non-empty list of {{role, content}} objects"
            )
        for i, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise DataError(f"{where}: {what}[{i}] has no string 'role'")
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise DataError(f"{where}: {what}[{i}] 'content' must be a string")
        return list(messages)

    def _chat(self, messages: list[Message], where: str, prompt_len: int = 0) -> Encoded:
        """Render and tokenize; the mask covers the assistant spans after the first
        ``prompt_len`` messages (and their generation prompt)."""
        template = self._template(where)
        try:
            text, spans = template.render_spans(messages)
            start_at = 0
            if prompt_len:
                prefix = template.render(messages[:prompt_len], add_generation_prompt=True)
                if not text.startswith(prefix):
                    raise DataError(
                        f"{template.name}: the chat template renders the prompt differently once "
                        "the completion follows"
                    )
                start_at = len(prefix)
        except DataError as exc:
            raise DataError(f"{where}: {exc}", argument=exc.argument) from None
        encoding = self.tokenizer.tokenizer.encode(text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, np.int64)
        mask = np.zeros(ids.size, bool)
        for start, end in spans:
            if start < start_at:
                continue
            first = encoding.char_to_token(start)
            last = encoding.char_to_token(end - 1)
            if first is None:  # transformers' rule: a span that maps to no token ends the search
                break
            mask[first : ids.size if last is None else last + 1] = True
        return Encoded(ids, mask)

    # -- generation ----------------------------------------------------------------------------
    def encode_prompt(self, messages: Sequence[Message], where: str = "prompt") -> np.ndarray:
        """The ids a chat model continues: ``messages`` rendered with the generation prompt.

        Raises
        ------
        DataError
            Malformed messages, no template, a template that fails on them.
        """
        template = self._template(where)
        checked = self._check_messages(list(messages), where, "messages")
        try:
            text = template.render(checked, add_generation_prompt=True)
        except DataError as exc:
            raise DataError(f"{where}: {exc}", argument=exc.argument) from None
        ids = self.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        return np.asarray(ids, np.int64)

    @property
    def end_of_turn_id(self) -> int | None:
        """The id generation stops at: the template's EOS token (``<|eot_id|>``,
        ``<|im_end|>``), else the tokenizer's EOS; ``None`` if that text is no single token."""
        return self.tokenizer.tokenizer.token_to_id(self.eos_text)

    # -- rows --------------------------------------------------------------------------------
    def encode(self, row: Mapping[str, Any], where: str = "row") -> Encoded:
        """The ids and trained-token mask of a conversation or prompt/completion row.

        Raises
        ------
        DataError
            An unknown row layout, malformed messages, a conversation with no assistant turn, an
            empty completion, a template that fails to render (each names ``where``).
        """
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        if self.messages_field in row:
            messages = self._check_messages(row[self.messages_field], where, self.messages_field)
            if not any(m["role"] == "assistant" for m in messages):
                raise DataError(
                    f"{where}: the conversation has no assistant turn, so nothing to train on"
                )
            encoded = self._chat(messages, where)
        elif "prompt" in row and "completion" in row:
            encoded = self._prompt_completion(row["prompt"], row["completion"], where)
        else:
            raise DataError(
                f"{where}: expected a {self.messages_field!r} column or 'prompt' and 'completion' "
                f"columns; the row has {sorted(map(str, row))}"
            )
        if not encoded.mask.any():
            raise DataError(f"{where}: no assistant token survived rendering (empty answer?)")
        return encoded

    def encode_prompt_row(self, row: Mapping[str, Any], where: str = "row") -> Encoded:
        """A prompts row's ``prompt`` as the ids a model continues (GRPO's rollouts): messages
        rendered with the generation prompt, or a string as its plain tokens; the mask is all
        zero (nothing here is trained on: the completions are sampled).

        Raises
        ------
        DataError
            A row that is no object, has no ``prompt``, or a prompt that is neither a string nor
            a list of messages (or renders to no token).
        """
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        if "prompt" not in row:
            raise DataError(
                f"{where}: a prompts row needs a 'prompt'; it has {sorted(map(str, row))}"
            )
        prompt = row["prompt"]
        if isinstance(prompt, str):
            ids = np.asarray(self._plain_ids(prompt), np.int64)
        elif _is_messages(prompt):
            ids = self.encode_prompt(prompt, where)
        else:
            raise DataError(f"{where}: 'prompt' must be a string or a list of messages")
        if ids.size == 0:
            raise DataError(f"{where}: the prompt encodes to no tokens")
        return Encoded(ids, np.zeros(ids.size, bool))

    def _prompt_completion(self, prompt: Any, completion: Any, where: str) -> Encoded:
        if isinstance(prompt, str) and isinstance(completion, str):
            if not completion:
                raise DataError(f"{where}: the completion is empty")
            full = completion if completion.endswith(self.eos_text) else completion + self.eos_text
            prompt_ids, ids = self._plain_ids(prompt), self._plain_ids(prompt + full)
            keep = common_prefix(prompt_ids, ids)
            mask = np.arange(len(ids)) >= keep
            return Encoded(np.asarray(ids, np.int64), mask)
        if _is_messages(prompt) and _is_messages(completion):
            head = self._check_messages(prompt, where, "prompt")
            tail = self._check_messages(completion, where, "completion")
            if not any(m["role"] == "assistant" for m in tail):
                raise DataError(f"{where}: the completion has no assistant turn")
            return self._chat(head + tail, where, prompt_len=len(head))
        raise DataError(
            f"{where}: 'prompt' and 'completion' must both be strings or both lists of messages"
        )

    def encode_pair(self, row: Mapping[str, Any], where: str = "row") -> Pair:
        """A preference row's chosen and rejected sequences (prompt + completion each; the mask
        covers the completion), by TRL's rule (module docstring).

        Raises
        ------
        DataError
            A missing column, mixed formats, an empty completion, a template that fails.
        """
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise DataError(
                f"{where}: a preference row needs 'prompt', 'chosen' and 'rejected'; missing "
                f"{missing}"
            )
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if value in ("", []):
                raise DataError(f"{where}: the {name} completion is empty")
        if all(isinstance(v, str) for v in (prompt, chosen, rejected)):
            eos = self.eos_text
            prompt_ids = self._plain_ids(prompt)
            full = [
                self._plain_ids(prompt + (c if c.endswith(eos) else c + eos))
                for c in (chosen, rejected)
            ]
        elif all(_is_messages(v) for v in (prompt, chosen, rejected)):
            template = self._template(where)
            head = self._check_messages(prompt, where, "prompt")
            tails = [
                self._check_messages(chosen, where, "chosen"),
                self._check_messages(rejected, where, "rejected"),
            ]
            try:
                texts = [template.render(head, add_generation_prompt=True)]
                texts += [template.render(head + tail) for tail in tails]
            except DataError as exc:
                raise DataError(f"{where}: {exc}", argument=exc.argument) from None
            prompt_ids, *full = (
                list(self.tokenizer.tokenizer.encode(t, add_special_tokens=False).ids)
                for t in texts
            )
        else:
            raise DataError(
                f"{where}: 'prompt', 'chosen' and 'rejected' must all be strings or all lists of "
                "messages"
            )
        keep = min(common_prefix(prompt_ids, ids) for ids in full)
        out = []
        for name, ids in zip(("chosen", "rejected"), full, strict=True):
            if len(ids) <= keep:
                raise DataError(f"{where}: the {name} completion encodes to no tokens")
            out.append(Encoded(np.asarray(ids, np.int64), np.arange(len(ids)) >= keep))
        return Pair(out[0], out[1])
