"""The site's reference pages, generated at build time from the code, never written by hand:

* every config key (type, default, allowed values, whether ``--resume`` may change it, help) from
  the trainer's schema (tjx-core's config engine walking the packages' config classes, the rows
  ``python -m trainer --show-config`` prints), for every model kind;
* every preset (``apps/trainer/configs/*.yaml``): what it is for and the keys it sets;
* every flag of both apps, from their argparse parsers;
* each package's public API (its ``__all__``), signatures and docstrings.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from eval.cli import build_parser as eval_parser
from tjx.core import config as core_config
from trainer.cli import build_parser as trainer_parser
from trainer.config.schema import KINDS
from trainer.config.settings import configs_dir, load_config_data, preset_names, rows
from trainer.config.typed import SCHEMA, read_config
from trainer.loop.resume import is_training_only

#: The packages whose public API the site lists, in the DAG's order (docs/architecture.md).
PACKAGES = ("core", "kernels", "nn", "optim", "parallel", "data", "ckpt", "metrics")
#: The reference pages: site path → title (the nav in docs/mkdocs.yml names the same paths).
CONFIG_PAGE = "reference/config.md"
PRESETS_PAGE = "reference/presets.md"
CLI_PAGE = "reference/cli.md"
#: What the top-level sections hold, one line each (the keys' own help says the rest).
SECTION_NOTES = {
    "": "The run's own settings.",
    "model": "The model: its family (`model.kind`) and that family's tjx-nn config. Keys "
    "that only some kinds have say which.",
    "optimizer": "tjx-optim's optimizer, schedule, clipping and accumulation.",
    "train": "The step loop: steps, batch, precision of the loop, fitting the step to memory, "
    "compilation.",
    "data": "tjx-data's sources, tokenizer and loader.",
    "mesh": "tjx-parallel's device mesh: data, FSDP, tensor, pipeline, context and expert axes.",
    "lora": "Low-rank adapters (tjx-nn's LoRA).",
    "preference": "DPO on preference pairs (tjx-nn's preference loss).",
    "grpo": "GRPO: the trainer's rollout settings and tjx-nn's loss.",
    "logging": "Where metrics go (console, JSONL, W&B, TensorBoard).",
    "sampling": "The samples a run writes at each evaluation.",
    "checkpoint": "How often and how many checkpoints a run keeps (tjx-ckpt).",
    "eval": "Held-out evaluation during training.",
}


@dataclasses.dataclass
class KeyEntry:
    """One config key as the reference shows it."""

    key: str
    type: str
    allowed: str
    help: str
    resumable: bool
    defaults: dict[str, str]  # model kind → its default value (as --set writes it)


def config_keys() -> list[KeyEntry]:
    """Every key of the trainer's schema, once, in the schema's order (the default kind's keys
    first, a key only some kinds have after the key it follows there)."""
    found: dict[str, KeyEntry] = {}
    order: list[str] = []
    for kind in KINDS:
        cfg = read_config({"model": {"kind": kind}})
        data = cfg.to_dict()
        last = None
        for key, tp, value, allowed, help_text in rows(cfg):
            if key not in found:
                resumable = is_training_only(key, data)
                found[key] = KeyEntry(key, tp, allowed, help_text, resumable, {})
                order.insert(order.index(last) + 1 if last else 0, key)
            found[key].defaults[kind] = value
            last = key
    # The kind's own default is the kind itself when it is named; unnamed, it is gpt2.
    found["model.kind"].defaults = dict.fromkeys(KINDS, found["model.kind"].defaults["gpt2"])
    return [found[key] for key in order]


def _section(key: str) -> str:
    return key.split(".")[0] if "." in key else ""


def _code(text: str) -> str:
    """``text`` as an inline code span that may itself hold backticks."""
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _default_text(entry: KeyEntry) -> str:
    values = set(entry.defaults.values())
    if len(values) == 1:
        return _code(next(iter(values)))
    return "; ".join(f"{kind}: {_code(value)}" for kind, value in entry.defaults.items())


def config_page() -> str:
    """The configuration reference: a heading per key (anchor: the dotted key itself)."""
    keys = config_keys()
    lines = [
        "# Configuration reference",
        "",
        f"Every key of the trainer's config — {len(keys)} keys — generated when this site was "
        "built from the schema itself (tjx-core's config engine walking the packages' config "
        "classes: the rows `python -m trainer --show-config` prints), so it cannot drift from "
        "the code. Set a key in a YAML file or on the command line with "
        "`--set KEY=VALUE`; an unknown key or a value outside its allowed ones is refused in "
        "one line before anything is written. Presets and what they set: "
        "[presets](presets.md); the command-line flags: [command line](cli.md).",
        "",
        "**`--resume`** says whether a resumed run may change the key: *may change* keys only "
        "steer the loop (steps, intervals, logging); *fixed* keys define what the checkpoints "
        "hold (the model, the optimizer state, the data stream), and a resume that changes one "
        "is refused, naming it ([checkpoints and resume](../guides/checkpoints.md)).",
        "",
        f"Model kinds: {', '.join(f'`{k}`' for k in KINDS)} (`model.kind`; `gpt2` when unset). "
        "A default that differs between kinds is given per kind.",
        "",
    ]
    current = None
    for entry in keys:
        section = _section(entry.key)
        if section != current:
            current = section
            title = f"`{section}`" if section else "Top level"
            lines += [f"## {title}", "", SECTION_NOTES.get(section, ""), ""]
        facts = [f"**type** {entry.type}", f"**default** {_default_text(entry)}"]
        if entry.allowed:
            facts.append(f"**allowed** {entry.allowed}")
        facts.append("**`--resume`** " + ("may change" if entry.resumable else "fixed"))
        if len(entry.defaults) < len(KINDS):
            facts.append("**kinds** " + ", ".join(f"`{k}`" for k in entry.defaults))
        lines += [
            f"#### `{entry.key}` {{ #{entry.key} }}",
            "",
            " · ".join(facts),
            "",
            entry.help[:1].upper() + entry.help[1:] + ("" if entry.help.endswith(".") else "."),
            "",
        ]
    return "\n".join(lines)


def _preset_note(path: Path) -> str:
    """The comment block at the top of a preset's YAML: prose joined into paragraphs, its command
    lines (``python -m …`` and their continuations) kept as a ``text`` block."""
    out: list[str] = []
    prose: list[str] = []
    commands: list[str] = []

    def flush() -> None:
        if prose:
            out.append(" ".join(prose))
            prose.clear()
        if commands:
            out.append("```text\n" + "\n".join(commands) + "\n```")
            commands.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("python -m") or (commands and commands[-1].endswith("\\")):
            if prose:
                flush()
            commands.append(text)
        elif not text:
            flush()
        else:
            if commands:
                flush()
            prose.append(text)
    flush()
    return "\n\n".join(out)


def presets_page() -> str:
    """Every preset: its note, its base, its model kind and every key it sets."""
    lines = [
        "# Presets",
        "",
        "The trainer's presets (`--config NAME`), generated when this site was built from "
        "`apps/trainer/configs/*.yaml`. Each lists the keys it sets away from the defaults "
        "(a `base:` chain resolved); every other key holds its default "
        "([configuration reference](config.md)). Start from one and change what you need: "
        "`--config tiny --set train.steps=200`, or a YAML file of your own with `base: tiny`.",
        "",
    ]
    folder, empty = configs_dir(), read_config({}).to_dict()
    for name in preset_names():
        data = load_config_data(name)
        kind = data.get("model", {}).get("kind", "gpt2") if isinstance(data, dict) else "gpt2"
        base = yaml.safe_load((folder / f"{name}.yaml").read_text(encoding="utf-8")).get("base")
        lines += [f"## `{name}` {{ #{name} }}", "", _preset_note(folder / f"{name}.yaml"), ""]
        built_on = f"; built on [`{base}`](#{base})" if base else ""
        lines += [f"Model kind `{kind}`{built_on}.", ""]
        lines += ["| key | value |", "|---|---|"]
        for setting in core_config.changed(SCHEMA, empty, data):
            key, _, value = setting.partition("=")
            cell = _code(value).replace("|", "\\|")
            lines.append(f"| [`{key}`](config.md#{key}) | {cell} |")
        lines += ["", f"Train it: `python -m trainer --config {name}`.", ""]
    return "\n".join(lines)


def _flag_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An action's help with argparse's ``%(name)s`` placeholders filled."""
    text = action.help or ""
    if "%" not in text:
        return text
    params = dict(vars(action), prog=parser.prog)
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return text % params


def _flag_title(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.dest
    metavar = action.metavar
    if action.nargs == 0:
        value = ""
    elif isinstance(metavar, tuple):
        value = " " + " ".join(metavar)
    elif action.choices is not None and metavar is None:
        value = " {" + ",".join(map(str, action.choices)) + "}"
    else:
        value = " " + (metavar or action.dest.upper())
    return ", ".join(action.option_strings) + value


def _groups(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, list[argparse.Action]]]:
    """(title, description, actions) of each argument group with flags, help excluded; a
    mutually exclusive group's flags are in the group that holds them."""
    for group in parser._action_groups:  # argparse has no public walk of its groups
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if actions:
            yield group.title or "", group.description or "", actions


def flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` but ``-h``/``--help``."""
    return [
        s
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)
        for s in a.option_strings
    ]


def _parser_section(app: str, parser: argparse.ArgumentParser, module: str) -> list[str]:
    lines = [f"## `{app}`", "", parser.description or "", ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += [
        f"```text\n{usage}\n```",
        "",
        f"Run as `python -m {module}` (or `./pants run " f"apps/{module} -- …`).",
    ]
    if parser.epilog:
        lines += ["", parser.epilog[:1].upper() + parser.epilog[1:] + "."]
    lines.append("")
    for title, description, actions in _groups(parser):
        if title not in ("options", "optional arguments"):
            lines += [f"### {title}", "", description, ""]
        for action in actions:
            anchor = f"{app}{action.option_strings[0]}" if action.option_strings else action.dest
            lines += [f"#### `{_flag_title(action)}` {{ #{anchor} }}", ""]
            extra = []
            if action.required:
                extra.append("required")
            if action.default not in (None, False, [], argparse.SUPPRESS):
                extra.append(f"default {_code(str(action.default))}")
            if action.choices is not None:
                extra.append("one of " + ", ".join(_code(str(c)) for c in action.choices))
            if action.nargs == 0:
                extra.append("a switch")
            if getattr(action, "container", None) is not None and action in _exclusive(parser):
                extra.append(
                    "exactly one of "
                    + ", ".join(f"`{a.option_strings[0]}`" for a in _exclusive(parser)[action])
                )
            text = _flag_help(parser, action)
            lines += [
                text[:1].upper()
                + text[1:]
                + (f" ({'; '.join(extra)})" if extra else "")
                + ("" if text.endswith(".") else "."),
                "",
            ]
    return lines


def _exclusive(parser: argparse.ArgumentParser) -> dict[argparse.Action, list[argparse.Action]]:
    """Each flag of a required mutually exclusive group → the group's flags."""
    out: dict[argparse.Action, list[argparse.Action]] = {}
    for group in parser._mutually_exclusive_groups:
        if group.required:
            for action in group._group_actions:
                out[action] = list(group._group_actions)
    return out


def cli_page() -> str:
    """Both apps' flags, from their argparse parsers."""
    lines = [
        "# Command line",
        "",
        "Every flag of the two apps, generated when this site was built from their argparse "
        "parsers (what `--help` prints). Config keys are set with `--set KEY=VALUE` "
        "([configuration reference](config.md)).",
        "",
    ]
    lines += _parser_section("trainer", trainer_parser(), "trainer")
    lines += _parser_section("eval", eval_parser(), "eval")
    return "\n".join(lines)


def _summary_and_rest(doc: str) -> tuple[str, str]:
    paragraphs = inspect.cleandoc(doc).split("\n\n", 1)
    summary = " ".join(paragraphs[0].split())
    return summary, (paragraphs[1].strip() if len(paragraphs) > 1 else "")


def _kind(value: Any) -> str:
    if inspect.isclass(value):
        return "class"
    if inspect.ismodule(value):
        return "module"
    if callable(value):
        return "function"
    return "constant"


class _Written:
    """An annotation as its source wrote it (``from __future__ import annotations`` keeps them
    as strings, which `inspect` would print quoted)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(annotation: Any) -> Any:
    return _Written(annotation) if isinstance(annotation, str) else annotation


def _signature(name: str, value: Any) -> str:
    try:
        if not (inspect.isclass(value) or callable(value)):
            return name
        sig = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin or C function without one
        return name
    params = [p.replace(annotation=_unquoted(p.annotation)) for p in sig.parameters.values()]
    sig = sig.replace(parameters=params, return_annotation=_unquoted(sig.return_annotation))
    return f"{name}{sig}"


def public_names(module: Any) -> list[str]:
    """A package's public names: its ``__all__``, else what it binds without a leading ``_``."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(names, key=str.lower)


def api_page(package: str) -> str:
    """One package's public API: each exported name's kind, signature and docstring."""
    module_name = f"tjx.{package}"
    module = importlib.import_module(module_name)
    summary = _summary_and_rest(module.__doc__ or "")[0]
    lines = [
        f"# tjx-{package}",
        "",
        f"The public API of `{module_name}` (its `__all__`), generated when this site was built "
        f"from the docstrings. The package's README says how the parts fit: "
        f"[packages/tjx-{package}/README.md](../../repo/packages/tjx-{package}/README.md).",
        "",
    ]
    if summary:
        lines += [summary, ""]
    version = getattr(module, "__version__", None)
    if version:
        lines += [f"Version: `{version}` (`{module_name}.__version__`).", ""]
    # A dunder name (``__version__``, said above) makes no heading: Markdown reads its
    # underscores as emphasis.
    for name in (n for n in public_names(module) if not n.startswith("__")):
        value = getattr(module, name)
        doc = inspect.getdoc(value) if _kind(value) != "constant" else None
        lines += [f"## `{name}` {{ #{module_name}.{name} }}", "", f"*{_kind(value)}*", ""]
        lines += [f"```python\n{_signature(name, value)}\n```", ""]
        if doc:
            first, body = _summary_and_rest(doc)
            lines += [first, ""]
            if body:
                lines += [f"```text\n{body}\n```", ""]
        elif _kind(value) == "constant":
            shown = repr(value)
            lines += [f"```python\n{shown if len(shown) < 400 else shown[:400] + ' …'}\n```", ""]
    return "\n".join(lines)


def api_pages() -> dict[str, str]:
    """Site path → page of every package's API."""
    return {f"reference/api/tjx-{p}.md": api_page(p) for p in PACKAGES}


def all_pages() -> dict[str, str]:
    """Every generated page: site path → Markdown."""
    makers: dict[str, Callable[[], str]] = {
        CONFIG_PAGE: config_page,
        PRESETS_PAGE: presets_page,
        CLI_PAGE: cli_page,
    }
    out = {path: make() for path, make in makers.items()}
    out.update(api_pages())
    return out
