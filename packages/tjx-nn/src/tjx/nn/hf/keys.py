"""Every ``config.json`` key a family's import reads, read once: its type, transformers' default
and the values it may take (`Key`, gathered per family in a `Spec`).

Each import reads its ``config.json`` dict through its family's ``SPEC.read`` before anything
else, so what follows only ever sees keys of the right type in range, with transformers'
defaults filled in where a key is left out. What it refuses is one `HFConfigError` line naming
the file, the key and the fix:

- the model's sizes (``vocab_size``, ``hidden_size``, ``intermediate_size``,
  ``num_hidden_layers``, ``num_attention_heads``; GPT-2's ``n_embd``, ``n_layer``, ``n_head``)
  left out: transformers' defaults for them describe its reference checkpoint (Llama 2 7B's
  4096 ...), never another, and transformers writes them in every ``config.json`` it saves
  (nested ``text_config`` too), so a config without one is damaged (`REQUIRED`);
- a key whose transformers default is None where tjx needs a number (`UNSET`);
- null where transformers' type takes none (``num_attention_heads: null``);
- a value of the wrong type (a string or a bool for a number, a float for an integer) or out of
  range (a size below 1, a negative epsilon, a dropout above 1), and a per-layer list of the
  wrong length or kinds (``layer_types``);
- a rule between keys (`Spec.rules`, ``num_key_value_heads`` dividing ``num_attention_heads``,
  and ``hidden_size`` a multiple of the heads where ``head_dim`` is derived from it).

Any other key left out takes the default of transformers' config class for the family
(transformers 5.24), as ``from_pretrained`` reads it; null takes what that class makes of it.
Which keys a family knows at all (the rest refused as not understood) is its import's business.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal


class HFConfigError(ValueError):
    """A ``config.json`` key left out, null, of the wrong type or out of range: one line naming the
    file, the key and the fix (a ``ValueError``, as every refusal of ``load_hf``)."""


class _Marker:
    """A named sentinel (its repr is its name)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: A model size transformers defaults to its reference checkpoint's: tjx never assumes it.
REQUIRED = _Marker("REQUIRED")
#: transformers' default is None and tjx needs a value: left out is refused like a size.
UNSET = _Marker("UNSET")
#: Optional and left as it is: the import derives it (from other keys, as transformers does).
ABSENT = _Marker("ABSENT")
#: null is refused: transformers' type for the key takes none.
REFUSE = _Marker("REFUSE")

Kind = Literal["int", "float", "bool", "str", "list", "dict"]
#: What each kind is called in messages, and the Python types JSON gives it.
_NAMES: dict[str, str] = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "dict": "a JSON object",
}
_JSON_NAMES = {bool: "a bool", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a JSON object"}  # fmt: skip


@dataclass(frozen=True)
class Key:
    """One ``config.json`` key: its kind, what it is when left out and when null, its range.

    Attributes
    ----------
    kind : {"int", "float", "bool", "str", "list", "dict"}
        ``int`` takes JSON integers only (not ``16.0``, not ``true``: as transformers' strict
        config classes); ``float`` any finite number but a bool.
    default : Any
        The value when the key is left out: transformers' default, or `REQUIRED`, `UNSET`,
        `ABSENT`.
    null : Any
        What null reads as: `REFUSE`, `ABSENT` (as if left out), `UNSET` (transformers reads it
        as None, where tjx needs a number: refused), or the value (None where the import
        derives it).
    low, above, high : float, optional
        ``value >= low``, ``value > above``, ``value <= high``.
    items : {"int", "str"}, optional
        A list's entries' kind.
    choices : tuple, optional
        The values a list's entries may take.
    per_layer : bool
        A list with one entry per layer (``num_hidden_layers`` of them).
    """

    kind: Kind
    default: Any = REQUIRED
    null: Any = REFUSE
    low: float | None = None
    above: float | None = None
    high: float | None = None
    items: Literal["int", "str"] | None = None
    choices: tuple[Any, ...] | None = None
    per_layer: bool = False

    def want(self) -> str:
        """What the key must be, in words (``an integer >= 1``, ``a number in [0, 1]`` ...)."""
        words = _NAMES[self.kind]
        if self.items is not None:
            words += f" of {'integers' if self.items == 'int' else 'strings'}"
        if self.low is not None and self.high is not None:
            words += f" in [{self.low:g}, {self.high:g}]"
        elif self.above is not None and self.high is not None:
            words += f" in ({self.above:g}, {self.high:g}]"
        elif self.low is not None:
            words += f" >= {self.low:g}"
        elif self.above is not None:
            words += f" > {self.above:g}"
        if self.null is not REFUSE and self.null is not UNSET:
            words += " or null"
        return words

    def check(self, value: Any) -> str | None:
        """Why ``value`` (not null) is not one this key takes, or None when it is."""
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "type"
            if self.kind == "int" and not isinstance(value, int):
                return "type"
            if not math.isfinite(value):
                return "range"
            if (
                (self.low is not None and value < self.low)
                or (self.above is not None and value <= self.above)
                or (self.high is not None and value > self.high)
            ):
                return "range"
        elif self.kind in ("bool", "str", "dict"):
            if not isinstance(value, {"bool": bool, "str": str, "dict": Mapping}[self.kind]):
                return "type"
        elif self.kind == "list":
            if not isinstance(value, list | tuple):
                return "type"
            entry = {"int": int, "str": str}.get(self.items or "")
            if entry is not None and any(
                isinstance(v, bool) or not isinstance(v, entry) for v in value
            ):
                return "type"
        if self.choices is not None and any(v not in self.choices for v in value):
            return "range"
        return None


def size(default: Any = REQUIRED, *, null: Any = REFUSE) -> Key:
    """A width, a count of heads or layers: an integer >= 1."""
    return Key("int", default, null, low=1)


def count(default: Any, *, null: Any = REFUSE) -> Key:
    """A count that may be 0 (dense layers, shared layers ...): an integer >= 0."""
    return Key("int", default, null, low=0)


def positive(default: Any, *, null: Any = REFUSE) -> Key:
    """A number > 0 (an epsilon, a RoPE base, a scale)."""
    return Key("float", default, null, above=0)


def nonneg(default: Any, *, null: Any = REFUSE) -> Key:
    """A number >= 0 (a loss coefficient, a noise level)."""
    return Key("float", default, null, low=0)


def fraction(default: Any, *, null: Any = REFUSE) -> Key:
    """A number in [0, 1] (a dropout rate, an init scale)."""
    return Key("float", default, null, low=0, high=1)


def flag(default: Any, *, null: Any = REFUSE) -> Key:
    """true or false."""
    return Key("bool", default, null)


def text(default: Any, *, null: Any = REFUSE) -> Key:
    """A string (which ones an import computes it checks itself, naming what it computes)."""
    return Key("str", default, null)


def obj(default: Any = ABSENT, *, null: Any = None) -> Key:
    """A JSON object (``rope_parameters`` ...: its entries are the import's to read)."""
    return Key("dict", default, null)


def layer_list(kinds: tuple[str, ...], default: Any = ABSENT) -> Key:
    """A per-layer list of ``kinds`` (``layer_types``), null: transformers' default pattern."""
    return Key("list", default, None, items="str", choices=kinds, per_layer=True)


def int_list(default: Any = ABSENT, *, null: Any = None) -> Key:
    """A list of integers (layer indices)."""
    return Key("list", default, null, items="int")


#: The two kinds of attention layer most families' ``layer_types`` list.
ATTENTION_KINDS = ("full_attention", "sliding_attention")

#: A rule between two keys (read after each key): ``(a, op, b)`` with op ``"<="`` (``a <= b``)
#: or ``"divides"`` (``b % a == 0``); skipped while either is null or 0 (a count of none, which
#: the import reads itself: "a qwen2_moe without experts (load it dense)").
Rule = tuple[str, Literal["<=", "divides"], str]


@dataclass(frozen=True)
class Spec:
    """The keys one family's import reads (`Key` each), transformers' class for messages, and
    the rules between keys.

    Attributes
    ----------
    cls : str
        transformers' config class (``LlamaConfig``), named in messages.
    keys : Mapping[str, Key]
        Each key the import reads.
    rules : tuple of Rule
        Rules between keys beyond the heads' (checked when both are set and not 0).
    head_dim_from_hidden : bool
        A ``head_dim`` null or left out is ``hidden_size // num_attention_heads`` (so the heads
        must divide ``hidden_size``); DeepSeek's MLA sizes its heads from its own keys.
    """

    cls: str
    keys: Mapping[str, Key]
    rules: tuple[Rule, ...] = ()
    head_dim_from_hidden: bool = True

    def but(
        self,
        cls: str,
        *,
        rules: tuple[Rule, ...] = (),
        head_dim_from_hidden: bool | None = None,
        **keys: Key | None,
    ) -> Spec:
        """This spec for another class: ``keys`` added or replaced (None: dropped), ``rules``
        added, ``head_dim_from_hidden`` changed when given."""
        merged = {k: v for k, v in {**self.keys, **keys}.items() if v is not None}
        derived = head_dim_from_hidden
        if derived is None:
            derived = self.head_dim_from_hidden
        return replace(
            self, cls=cls, keys=merged, rules=self.rules + rules, head_dim_from_hidden=derived
        )

    def read(self, hf: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
        """``hf`` with every key of this spec checked, transformers' defaults filled in where
        one is left out and null read as the class reads it (``prefix``: where the keys sit in
        ``config.json``, ``"text_config."`` for an image-text model's text model).

        Raises
        ------
        HFConfigError
            One line: the key, what is wrong with it and the fix.
        """
        out = dict(hf)
        for name, key in self.keys.items():
            where = f"config.json: {prefix}{name}"
            if hf.get(name) is None and key.null is ABSENT:  # null: as if left out
                out.pop(name, None)
            if name not in out:
                if key.default is REQUIRED:
                    raise HFConfigError(
                        f"{where} is missing; it sets the model's size, which tjx never "
                        f"assumes (transformers' {self.cls} default is its reference model's, "
                        f"not this checkpoint's): add the checkpoint's value ({key.want()})"
                    )
                if key.default is UNSET:
                    raise HFConfigError(
                        f"{where} is missing; transformers' {self.cls} has no default for it "
                        f"and tjx needs it: add the checkpoint's value ({key.want()})"
                    )
                if key.default is not ABSENT:
                    out[name] = copy.deepcopy(key.default)
                continue
            value = out[name]
            if value is None:
                if key.null is UNSET:
                    raise HFConfigError(
                        f"{where} is null; transformers' {self.cls} then has no value for it "
                        f"and tjx needs one: give the checkpoint's value ({key.want()})"
                    )
                if key.null is REFUSE:
                    raise HFConfigError(
                        f"{where} is null; transformers' {self.cls} takes no null there: give "
                        f"the checkpoint's value ({key.want()})"
                    )
                out[name] = copy.deepcopy(key.null)
                continue
            problem = key.check(value)
            if problem is not None and not key.per_layer:  # a per-layer list: `_check_layers`
                got = _JSON_NAMES.get(type(value), type(value).__name__)
                shown = f"{value!r} ({got})" if problem == "type" else repr(value)
                raise HFConfigError(
                    f"{where} is {shown}, not {key.want()}: give the checkpoint's value"
                )
        for name in ("rope_parameters", "rope_scaling"):
            if name in self.keys and isinstance(out.get(name), Mapping):
                _check_rope(out[name], f"{prefix}{name}.", self.cls)
        self._check_layers(out, prefix)
        self._check_rules(out, prefix)
        return out

    def _check_layers(self, out: Mapping[str, Any], prefix: str) -> None:
        """Per-layer lists hold one entry per layer; the heads fit together."""
        layers = out.get("num_hidden_layers")
        for name, key in self.keys.items():
            value = out.get(name)
            if not key.per_layer or value is None:
                continue
            if key.check(value) is not None or len(value) != layers:
                listed = isinstance(value, list | tuple)
                got = f"{len(value)} entries" if listed else repr(value)
                unknown = sorted({str(v) for v in value} - set(key.choices or ())) if listed else []
                raise HFConfigError(
                    f"config.json: {prefix}{name} must list {layers} of "
                    f"{sorted(key.choices or ())} (one per num_hidden_layers); got {got}"
                    f"{' with ' + ', '.join(unknown) if unknown else ''}: fix the list"
                )
        heads, kv = out.get("num_attention_heads"), out.get("num_key_value_heads")
        if heads is None:
            return
        if kv is not None and heads % kv:
            raise HFConfigError(
                f"config.json: {prefix}num_key_value_heads {kv} does not divide "
                f"{prefix}num_attention_heads {heads}; each key/value head serves a whole group "
                "of query heads: fix one of them"
            )
        hidden = out.get("hidden_size")
        derived = self.head_dim_from_hidden and out.get("head_dim") is None
        if derived and hidden is not None and hidden % heads:
            raise HFConfigError(
                f"config.json: {prefix}hidden_size {hidden} is not a multiple of "
                f"{prefix}num_attention_heads {heads}, and head_dim is left out (transformers "
                "derives it as hidden_size // num_attention_heads): give head_dim or fix the sizes"
            )

    def _check_rules(self, out: Mapping[str, Any], prefix: str) -> None:
        for a, op, b in self.rules:
            x, y = out.get(a), out.get(b)
            if not x or not y:
                continue
            if op == "<=" and x > y:
                raise HFConfigError(
                    f"config.json: {prefix}{a} {x} exceeds {prefix}{b} {y}: fix one of them"
                )
            if op == "divides" and y % x:
                raise HFConfigError(
                    f"config.json: {prefix}{a} {x} does not divide {prefix}{b} {y}: fix one of them"
                )


def _check_rope(rope: Mapping[str, Any], prefix: str, cls: str) -> None:
    """A RoPE entry's numbers (each per-layer-type entry's, for Gemma's and OLMo 3's), checked
    as the keys are; what else a scaling holds `RopeScaling.parse` checks."""
    nested = [(f"{prefix}{k}.", v) for k, v in rope.items() if isinstance(v, Mapping)]
    for where, entry in nested or [(prefix, rope)]:
        Spec(cls, ROPE_ENTRY, head_dim_from_hidden=False).read(entry, prefix=where)


#: A RoPE entry's keys tjx reads itself (``rope_parameters``, legacy ``rope_scaling``): its base,
#: the rotated fraction, the scaling's kind and factor (null: derived from the lengths).
ROPE_ENTRY: dict[str, Key] = {
    "rope_theta": positive(ABSENT),
    "partial_rotary_factor": Key("float", ABSENT, above=0, high=1),
    "rope_type": text(ABSENT),
    "type": text(ABSENT),
    "factor": positive(ABSENT, null=None),
}


#: The keys every LLaMA-shaped family reads (``config.BASE_KEYS``) as transformers' ``LlamaConfig``
#: (5.24) reads them; each family's spec starts here. ``rope_theta``, ``rope_scaling`` (legacy)
#: and ``rope_parameters`` are read by the RoPE readers (`config.rope_from_hf`,
#: ``family_base.rope_theta``): a base left out (or null) comes from the other.
BASE = Spec(
    "LlamaConfig",
    {
        "vocab_size": size(),
        "hidden_size": size(),
        "intermediate_size": size(),
        "num_hidden_layers": size(),
        "num_attention_heads": size(),
        # null (or left out, here): one key/value head per query head (``__post_init__``).
        "num_key_value_heads": size(None, null=None),
        "head_dim": size(None, null=None),  # None: hidden_size // num_attention_heads
        "max_position_embeddings": size(2048),
        "initializer_range": Key("float", 0.02, above=0, high=1),
        "rms_norm_eps": positive(1e-6),
        "tie_word_embeddings": flag(False),
        "rope_theta": positive(ABSENT, null=ABSENT),
        "rope_scaling": obj(),
        "rope_parameters": obj(),
        "attention_bias": flag(False),
        "attention_dropout": fraction(0.0, null=0.0),
    },
)
#: transformers' ``LlamaConfig``: the common keys, its activation and MLP bias.
LLAMA = BASE.but("LlamaConfig", hidden_act=text("silu"), mlp_bias=flag(False))
