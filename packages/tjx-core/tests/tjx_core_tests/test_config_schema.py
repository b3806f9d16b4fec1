"""tjx.core.config's schema on a small tree of dataclasses the tests declare: values read and
checked by their fields, sections walked, built, written back and listed; every problem one
ConfigError naming the key path."""

# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from tjx.core import config as ckpt
from tjx.core.config import ConfigError, Schema
from tjx.core.fields import setting


@dataclass(frozen=True)
class Inner:
    low: float | None = setting(None, gt=0.0, help="a bound")
    high: float | None = setting(None, max=1.0)


@dataclass(frozen=True)
class Block:
    """A package's class: its own rules in __post_init__, worded by class name."""

    width: int = setting(8, min=1, help="how wide")
    heads: int | None = setting(None, min=1, help="null: width // 4")
    act: str = setting("gelu", choices=("gelu", "relu", "none"))
    names: tuple[str, ...] = setting(("a",), each_choices=("a", "b"))
    pair: tuple[int, int] = setting((1, 2))
    dtype: str = setting("float32")
    inner: Inner = setting(Inner, factory=True)

    def __post_init__(self) -> None:
        if self.heads is None:
            object.__setattr__(self, "heads", self.width // 4)
        if self.width % 2:
            raise ValueError(f"Block.width must be even; got {self.width}")


@dataclass(frozen=True)
class Loop:
    steps: int = setting(10, min=1, max=100)
    every: list[int] = setting(lambda: [1, 5], factory=True)
    flag: bool = setting(True)
    total: int = setting(0)


@dataclass(frozen=True)
class Root:
    name: str = setting("x")
    block: object = setting(None, section="block")
    loop: Loop = setting(Loop, factory=True)
    hidden: int = setting(0, key=False)


OWN = {"block": {"kind": (str, setting("plain", choices=("plain",)))}}
SCHEMA = Schema(
    Root,
    lambda section, kind: Block,
    package_sections=frozenset({"block"}),
    own_keys=OWN,
    filled={"loop.total": "loop.steps"},
    kind_of=lambda data: "plain",
)


def test_keys_list_own_keys_first_and_skip_filled_and_bookkeeping():
    assert list(SCHEMA.keys(Root, "", "plain")) == ["name", "block", "loop"]
    assert list(SCHEMA.keys(Block, "block", "plain"))[:2] == ["kind", "width"]
    assert "total" not in SCHEMA.keys(Loop, "loop", "plain")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"width": 0}, "block.width: 0 is too small; allowed: >= 1"),
        ({"act": "tanh"}, "block.act: 'tanh' is not allowed; choose one of 'gelu', 'relu', 'none'"),
        ({"names": ["c"]}, "block.names: 'c' is not allowed; items must be among 'a', 'b'"),
        ({"pair": [1]}, "block.pair: expected a list of 2 values, got [1]"),
        ({"width": True}, "block.width: expected an integer, got True"),
        ({"inner": {"low": 0}}, "block.inner.low: 0.0 is too small; allowed: > 0.0"),
        ({"nope": 1}, "block.nope: unknown key; allowed keys here: kind, width"),
        ([1], "block: expected a mapping of keys, got [1]"),
    ],
)
def test_a_bad_value_is_one_error_naming_its_key(data, message):
    with pytest.raises(ConfigError) as err:
        SCHEMA.values(Block, data, "block", "plain")
    assert str(err.value).startswith(message)


def test_values_read_yaml_numbers_and_drop_a_package_sections_null():
    read = SCHEMA.values(Block, {"width": 4, "act": None, "inner": {"low": "3e-4"}}, "block", "k")
    assert read == {"width": 4, "inner": {"low": 3e-4}}  # act: null is the class's own default
    assert SCHEMA.values(Loop, {"steps": 2}, "loop", "k") == {"steps": 2}


def test_values_of_the_top_section_name_each_key_by_itself_in_the_datas_order():
    read = SCHEMA.values(Root, {"loop": {"steps": 3}, "name": "y", "block": None}, "", "k")
    assert read == {"loop": {"steps": 3}, "name": "y", "block": {}}
    with pytest.raises(ConfigError, match=r"^loop\.steps: 0 is too small"):
        SCHEMA.values(Root, {"loop": {"steps": 0}, "nope": 1}, "", "k")
    with pytest.raises(ConfigError, match="^nope: unknown key; allowed keys here: name, block"):
        SCHEMA.values(Root, {"nope": 1, "loop": {"steps": 0}}, "", "k")


def test_a_setting_changed_in_a_section_that_is_off_is_refused_naming_the_first():
    why = "the loop is off"
    ckpt.check_unchanged(Loop(steps=10, flag=True), ["steps", "flag"], "loop", why)  # defaults
    with pytest.raises(ConfigError, match="^loop.flag: the loop is off$"):
        ckpt.check_unchanged(Loop(steps=5, flag=False), ["flag", "steps"], "loop", why)
    ckpt.check_unchanged(Loop(steps=5), ["flag"], "loop", why)  # only the given keys count


def test_a_filled_key_names_the_key_to_set():
    with pytest.raises(ConfigError, match="loop.total: the trainer sets it from loop.steps"):
        SCHEMA.values(Loop, {"total": 3}, "loop", "plain")


def test_lookup_walks_sections_and_refuses_a_section_or_value_misused():
    chain = SCHEMA.lookup("block.inner.high", "plain")
    assert [f.name for _, f in chain] == ["block", "inner", "high"]
    with pytest.raises(ConfigError, match="block.inner: is a section; set one of its keys: low"):
        SCHEMA.lookup("block.inner", "plain")
    with pytest.raises(ConfigError, match=r"loop.steps: is a value, not a section"):
        SCHEMA.lookup("loop.steps.x", "plain")


def test_build_makes_nested_sections_and_rewords_a_class_error():
    block = SCHEMA.build(Block, {"width": 4, "inner": {"low": 0.5}}, "block", {"Block.": "block."})
    assert block.inner == Inner(low=0.5) and block.heads == 1
    with pytest.raises(ConfigError, match="^block.width must be even; got 3$"):
        SCHEMA.build(Block, {"width": 3}, "block", {"Block.": "block."})
    with pytest.raises(ValueError, match="Block.width"):  # no words: the class's own error
        SCHEMA.build(Block, {"width": 3}, "block", {})


def test_write_gives_every_key_and_a_derived_value_as_null():
    block = Block(width=8, dtype=np.float16)  # type: ignore[arg-type]
    out = SCHEMA.write(block, "block", {"kind": "plain"})
    assert out["kind"] == "plain" and out["heads"] is None  # 8 // 4: derived again when read
    assert out["names"] == ["a"] and out["dtype"] == "float16"
    assert out["inner"] == {"low": None, "high": None}
    assert SCHEMA.write(Block(width=8, heads=3), "block", {"kind": "plain"})["heads"] == 3


def test_a_null_section_is_written_as_its_keys():
    @dataclass(frozen=True)
    class Holder:
        inner: Inner | None = setting(None)

    assert SCHEMA.write(Holder(), "h", {}) == {"inner": {"low": None, "high": None}}


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("loop.steps=1_0", "loop.steps", 10),
        ("loop.flag=off", "loop.flag", False),
        ("loop.every=[2, 3]", "loop.every", [2, 3]),
        ("loop.every=4,5", "loop.every", [4, 5]),
        ("block.act=none", "block.act", "none"),  # a choice, not null
        ("block.heads=null", "block.heads", None),
        ("block.inner.low=1e-3", "block.inner.low", 1e-3),
        ("old.steps=3", "loop.steps", 3),
    ],
)
def test_an_override_is_read_as_its_fields_type(text, key, value):
    renamed = lambda k: k.replace("old.", "loop.")
    assert ckpt.parse_override(SCHEMA, text, None, renamed) == (key, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loop.steps", "expected KEY=VALUE"),
        ("=1", "empty key"),
        ("loop.steps=many", "loop.steps: expected an integer, got 'many'"),
        ("block.heads=many", "block.heads: cannot read 'many' as an integer or null"),
        ("loop.every=[1,", "loop.every: cannot read"),
    ],
)
def test_a_bad_override_is_one_error(text, message):
    with pytest.raises(ConfigError, match=message):
        ckpt.parse_override(SCHEMA, text)


def test_overrides_apply_in_order_and_an_old_and_new_name_together_are_refused():
    said: list[str] = []
    renamed = lambda k: k.replace("old.", "loop.")
    data = {"loop": {"steps": 1}}
    out = ckpt.apply_overrides(SCHEMA, data, ["old.steps=2", "loop.flag=no"], renamed, said.append)
    assert out == {"loop": {"steps": 2, "flag": False}} and data == {"loop": {"steps": 1}}
    assert said == ["trainer: note: --set old.steps is loop.steps now (the old name still works)"]
    with pytest.raises(ConfigError, match="--set old.steps: is loop.steps now, which is set too"):
        ckpt.apply_overrides(SCHEMA, {}, ["loop.steps=2", "old.steps=3"], renamed)


def test_changed_lists_only_what_differs_from_the_preset_or_the_default():
    before = {"loop": {"steps": 5}}
    after = {"loop": {"steps": 5, "flag": True, "every": [2]}, "block": {"names": ["a"]}}
    assert ckpt.changed(SCHEMA, before, after) == ["loop.every=[2]"]


def test_the_key_table_lists_every_key_with_its_help_and_allowed_values():
    data = {"name": "n", "block": SCHEMA.write(Block(), "block", {"kind": "plain"})}
    data["loop"] = SCHEMA.write(Loop(), "loop", {})
    table = ckpt.key_table(SCHEMA, data, "a test")
    assert table.startswith("Every config key (`--set KEY=VALUE`); the value column holds a test.")
    assert "| `block.width` | an integer | `8` | >= 1 | how wide |" in table
    assert '| `block.names` | a list of a string | `["a"]` | each of a, b |  |' in table
    assert "| `block.inner.low` | a number or null | `null` | > 0.0 | a bound |" in table
    assert len(list(ckpt.key_rows(SCHEMA, data))) == len(table.splitlines()) - 4


def test_value_text_and_deep_merge():
    assert [ckpt.value_text(v) for v in (None, True, "a b", "", [1, 5])] == [
        "null", "true", "a b", '""', "[1, 5]",
    ]  # fmt: skip
    merged = ckpt.deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}, "d": {"e": 1}})
    assert merged == {"a": {"b": 3, "c": 2}, "d": {"e": 1}}


def test_keyed_names_the_key_of_a_packages_error():
    with (
        pytest.raises(ConfigError, match="^data.source: no such file$"),
        ckpt.keyed("data.source", FileNotFoundError),
    ):
        raise FileNotFoundError("no such file")
    with pytest.raises(ConfigError, match="^as it was$"), ckpt.keyed(None):
        raise ValueError("as it was")


def test_type_names_and_lazy_choices():
    assert ckpt.type_name(int | None) == "an integer or null"
    assert ckpt.type_name(tuple[int, float]) == "a list of an integer, a number"
    assert ckpt.type_name(Inner) == "a mapping"
    f = dataclasses.field(metadata={"choices": "tjx.core.config.values:_NULL_WORDS"})
    assert ckpt.choices(f) == ("null", "~", "", "none")
    assert ckpt.nested_class(Inner | None) is Inner and ckpt.optional(int | None)


def test_a_subclass_that_changes_a_default_keeps_its_bases_help():
    @dataclass(frozen=True)
    class Wide(Block):
        width: int = 16

    _, f = SCHEMA.keys(Wide, "block", "plain")["width"]
    assert f.default == 16 and f.metadata["help"] == "how wide"


def test_words_name_a_class_and_its_nested_and_filled_fields_by_their_keys():
    assert SCHEMA.words(Block, "block") == {
        "Block.": "block.",
        "Block: ": "block: ",
        "Inner.": "block.inner.",
        "Inner: ": "block.inner: ",
    }
    words = SCHEMA.words(Loop, "loop")
    assert words["Loop.total"] == "loop.steps" and next(iter(words)) == "Loop."


def test_reworded_replaces_the_longest_class_words_first():
    words = SCHEMA.words(Loop, "loop")
    bad = pytest.raises(ConfigError, match=r"^loop\.steps must be set; loop\.every too$")
    with bad, ckpt.reworded(words):
        raise ValueError("Loop.total must be set; Loop.every too")
    # "Loop: " is the section's.
    with pytest.raises(ConfigError, match=r"^loop: a bad mix$"), ckpt.reworded(words):
        raise ValueError("Loop: a bad mix")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"model": {"kind": "llama", "width": 4}}, "llama"),
        ({"model": {"width": 4}}, "gpt2"),  # the section names none: the default
        ({"model": None}, "gpt2"),  # a null section
        ({"train": {"kind": "llama"}}, "gpt2"),  # another section's kind is not the model's
        ([1, 2], "gpt2"),  # data that is no mapping
    ],
)
def test_kind_at_reads_the_sections_kind_or_its_default(data, kind):
    assert ckpt.kind_at("model", "gpt2")(data) == kind
