"""A tokenizer folder's chat template, rendered in a sandbox, with the assistant's character spans.

Where the template comes from (as transformers reads a folder): ``chat_template.jinja`` if the
folder has one, else ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of
``{"name", "template"}`` of which ``"default"`` is taken). The special tokens a template may name
(``bos_token``, ``eos_token``, ...) come from ``tokenizer_config.json``, then
``special_tokens_map.json``.

Rendering uses Jinja's ``ImmutableSandboxedEnvironment`` with the settings and globals that
transformers gives templates (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``; ``tojson``
without HTML escaping, ``raise_exception``, ``strftime_now``, ``namespace``): the same text
renders the same string, and a template cannot reach Python internals (``__class__``,
``__globals__``...), call unsafe methods or mutate its inputs. Templates on the hub are untrusted
code; in the sandbox they are only text.

Which characters the assistant wrote (the loss mask's source), by one of two rules:

1. The template marks them: text inside ``{% generation %}...{% endgeneration %}`` blocks, as
   transformers' ``return_assistant_tokens_mask`` reads them.
2. Otherwise, per assistant message ``i``: the text that rendering ``messages[: i + 1]`` adds to
   rendering ``messages[:i]`` with the generation prompt, cut after the tokenizer's EOS token
   when the added text holds it (the end-of-turn token is trained, what follows it, e.g. Qwen's
   newline, is the next turn's formatting). This needs a template that renders earlier turns the
   same whatever follows (Llama 3's, Qwen2's and most others do); one that does not is refused
   with the advice to add generation markers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tjx.data.chat.sandbox import SPANS, environment, plain
from tjx.data.errors import DataError
from tjx.data.tokenizers import fingerprint_of

__all__ = ["SPECIAL_TOKEN_NAMES", "ChatTemplate", "Message"]

Message = Mapping[str, Any]
Span = tuple[int, int]

#: The special-token names a template sees, as transformers passes them.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def _token_text(value: Any) -> str | None:
    """A special token's text from a tokenizer config entry (a string or an AddedToken dict)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc})", argument="tokenizer") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: must hold a JSON object", argument="tokenizer")
    return data


def _template_from_config(config: dict[str, Any], path: Path) -> str | None:
    value = config.get("chat_template")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return str(named["default"])
        raise DataError(
            f"{path}: chat_template lists templates {sorted(map(str, named))} but none named "
            "'default'",
            argument="tokenizer",
        )
    raise DataError(f"{path}: chat_template must be a string or a list", argument="tokenizer")


class ChatTemplate:
    """A chat template and the special tokens it is rendered with.

    Parameters
    ----------
    text : str
        The Jinja source.
    special_tokens : mapping, optional
        ``{"bos_token": "<s>", "eos_token": "</s>", ...}`` (see ``SPECIAL_TOKEN_NAMES``).
    name : str
        Where the template came from, for error messages.

    Raises
    ------
    DataError
        The text is not a valid Jinja template (the message names the line).
    """

    def __init__(
        self, text: str, special_tokens: Mapping[str, str] | None = None, *, name: str = "template"
    ) -> None:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{name}: the chat template is empty", argument="tokenizer")
        self.text = text
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self.name = name
        self._compiled: Any = None
        self._compile()  # syntax errors now, not at the first row

    @classmethod
    def from_folder(cls, folder: str | Path) -> ChatTemplate:
        """The template of a tokenizer folder (see the module docstring for where it is read).

        Raises
        ------
        DataError
            No such folder, unreadable JSON, or no chat template in it.
        """
        path = Path(folder).expanduser()
        if path.is_file():
            path = path.parent  # a tokenizer.json names its folder
        if not path.is_dir():
            raise DataError(f"no such tokenizer folder: {path}", argument="tokenizer")
        config_file = path / "tokenizer_config.json"
        config = _read_json(config_file) if config_file.is_file() else {}
        jinja_file = path / "chat_template.jinja"
        text: str | None = None
        if jinja_file.is_file():
            text, name = jinja_file.read_text(encoding="utf-8"), str(jinja_file)
        else:
            text, name = _template_from_config(config, config_file), str(config_file)
        if text is None:
            raise DataError(
                f"{path}: no chat template (neither chat_template.jinja nor a chat_template in "
                "tokenizer_config.json); chat data needs the tokenizer folder of a chat model",
                argument="tokenizer",
            )
        special: dict[str, str] = {}
        map_file = path / "special_tokens_map.json"
        sources = [config] + ([_read_json(map_file)] if map_file.is_file() else [])
        for key in SPECIAL_TOKEN_NAMES:
            for source in sources:
                token = _token_text(source.get(key))
                if token is not None:
                    special[key] = token
                    break
        return cls(text, special, name=name)

    # -- facts -------------------------------------------------------------------------------
    @property
    def eos_token(self) -> str | None:
        """The tokenizer's EOS text (the end-of-turn token of most chat templates)."""
        return self.special_tokens.get("eos_token")

    @property
    def has_generation_tags(self) -> bool:
        """Whether the template marks the assistant's text with ``{% generation %}`` blocks."""
        return re.search(r"\{%-?\s*generation\s*-?%\}", self.text) is not None

    @property
    def fingerprint(self) -> str:
        """A hash of the template text and its special tokens: equal ones render alike."""
        return fingerprint_of({"template": self.text, "special": self.special_tokens})

    # -- rendering ---------------------------------------------------------------------------
    def _compile(self) -> Any:
        if self._compiled is None:
            import jinja2

            try:
                self._compiled = environment().from_string(self.text)
            except jinja2.TemplateSyntaxError as exc:
                raise DataError(
                    f"{self.name}: the chat template is not valid Jinja (line {exc.lineno}: "
                    f"{exc.message})",
                    argument="tokenizer",
                ) from None
        return self._compiled

    def _generate(self, messages: Sequence[Message], add_generation_prompt: bool) -> Iterator[str]:
        import jinja2

        template = self._compile()
        try:
            yield from template.generate(
                messages=plain(list(messages)),
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.exceptions.SecurityError as exc:
            raise DataError(
                f"{self.name}: the chat template tried an operation the sandbox forbids ({exc}); "
                "it was stopped and ran no code",
                argument="tokenizer",
            ) from None
        # A template that fails on these messages (its own raise_exception on roles out of
        # order, a missing key) may be the row's fault or the template's: no one argument.
        except jinja2.TemplateError as exc:
            raise DataError(f"{self.name}: the chat template failed to render: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise DataError(
                f"{self.name}: the chat template failed to render: {type(exc).__name__}: {exc}"
            ) from None

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
        """The template's text for ``messages`` (with the assistant header after them when
        ``add_generation_prompt``).

        Raises
        ------
        DataError
            The template raised (e.g. its ``raise_exception`` on roles out of order), tried an
            operation the sandbox forbids, or failed on the messages.
        """
        return "".join(self._generate(messages, add_generation_prompt))

    def render_spans(self, messages: Sequence[Message]) -> tuple[str, list[Span]]:
        """The rendered conversation and the ``[start, end)`` character spans the assistant wrote.

        ``{% generation %}`` blocks when the template has them, else the prefix rule of the
        module docstring.

        Raises
        ------
        DataError
            As `render`; or a template without generation markers that renders an earlier turn
            differently once later turns follow.
        """
        if self.has_generation_tags:
            blocks: list[str] = []
            spans: list[Span] = []
            token = SPANS.set((blocks, spans))
            try:
                for block in self._generate(messages, False):
                    blocks.append(block)
            finally:
                SPANS.reset(token)
            return "".join(blocks), spans
        text = self.render(messages)
        spans = []
        for i, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[: i + 1])
            if not (upto.startswith(before) and text.startswith(upto)):
                raise DataError(
                    f"{self.name}: the chat template renders turn {i} differently once later "
                    "turns follow, so the assistant's text cannot be located; use a template that "
                    "marks it with {% generation %}...{% endgeneration %}",
                    argument="tokenizer",
                )
            start, end = len(before), len(upto)
            eos = self.eos_token
            cut = text.find(eos, start, end) if eos else -1
            if cut >= 0:
                end = cut + len(eos)  # type: ignore[arg-type]
            if end > start:
                spans.append((start, end))
        return text, spans

    # -- pickling (worker processes) ---------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"text": self.text, "special": self.special_tokens, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["text"], state["special"], name=state["name"])  # type: ignore[misc]
