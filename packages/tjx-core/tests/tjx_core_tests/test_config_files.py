"""tjx.ckpt's config files: presets and YAML paths read with ``base:`` chains, each problem one
ConfigError naming the file."""

from __future__ import annotations

import pytest

from tjx.core.config import ConfigError, ConfigFiles


@pytest.fixture()
def files(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "small.yaml").write_text("a: {b: 1, c: 2}\nold: 1\n")
    (presets / "loop.yaml").write_text("base: loop\n")

    def migrate(data):
        data = dict(data)
        if "old" in data:
            data["new"] = data.pop("old")
        return data

    return ConfigFiles(lambda: presets, migrate=migrate), tmp_path


def test_a_preset_is_read_migrated_and_named(files):
    cfg, _ = files
    assert cfg.names() == ["loop", "small"]
    assert cfg.load("small") == {"a": {"b": 1, "c": 2}, "new": 1, "name": "small"}


def test_a_file_changes_its_base_and_its_own_keys_win(files):
    cfg, tmp = files
    (tmp / "mid.yaml").write_text("base: small\na: {b: 5}\n")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "top.yaml").write_text("base: ../mid.yaml\nname: mine\n")
    assert cfg.load(str(tmp / "sub" / "top.yaml")) == {
        "a": {"b": 5, "c": 2}, "new": 1, "name": "mine",
    }  # fmt: skip
    assert cfg.load(str(tmp / "mid.yaml"))["name"] == "mid"  # the file's stem


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file holds no settings; give at least `base: <preset>`"),
        ("[1, 2]", "a config file must hold a mapping of keys, got [1, 2]"),
        ("a: [1, 2\n", "not valid YAML"),
        ("a: 1\na: 2\n", "key 'a' is given twice"),
        ("base: 3\n", ".base: expected a preset name or a .yaml path, got 3"),
        ("base: nope\n", "--config: unknown preset 'nope'; choose one of loop, small"),
        ("base: ./missing.yaml\n", ".base: no such file"),
    ],
)
def test_a_bad_file_is_one_error_naming_it(files, text, message):
    cfg, tmp = files
    path = tmp / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        cfg.load(str(path))


def test_bytes_that_are_not_utf8_a_folder_and_a_cycle_are_errors(files):
    cfg, tmp = files
    (tmp / "latin.yaml").write_bytes(b"a: \xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 3\)"):
        cfg.load(str(tmp / "latin.yaml"))
    (tmp / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="is a directory; pass a .yaml file"):
        cfg.load(str(tmp / "folder.yaml"))
    with pytest.raises(ConfigError, match="preset loop.base: a cycle: preset loop -> preset loop"):
        cfg.load("loop")
