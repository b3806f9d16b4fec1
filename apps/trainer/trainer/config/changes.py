"""What changed since a run was saved: its saved config against a new one, key by key.

A checkpoint holds the state of one model and optimizer and a position in one data stream, so
only some settings may change when a run is continued. The app names those (an allow-list of
dotted keys and whole sections); everything else must match, so a key added to the config later
is refused by default. :func:`config_changes` splits the differences accordingly and
:func:`describe_changes` words them (``model.d_model 32 → 64``) for the app's message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from tjx.core.config.text import flatten_config

#: A difference: dotted key → (saved value, new value); a key missing on one side has None there.
Diff = dict[str, tuple[object, object]]


def key_matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether dotted ``key`` is one of ``patterns``: a key, or a section ending in ``"."``.

    ``"train."`` matches ``train.steps``; ``"train.steps"`` does not match ``train.steps_extra``.
    """
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


@dataclasses.dataclass(frozen=True)
class ConfigChanges:
    """Every key whose value differs, split by whether the run may continue with it.

    Attributes
    ----------
    allowed:
        Changes of keys the app allows (``key → (saved, new)``, sorted by key).
    refused:
        Changes of every other key: the run cannot continue with them.
    """

    allowed: Diff
    refused: Diff

    def __bool__(self) -> bool:
        return bool(self.allowed or self.refused)


def config_changes(
    saved: Mapping[str, object],
    new: Mapping[str, object],
    *,
    changeable: Iterable[str] | Callable[[str], bool],
) -> ConfigChanges:
    """Compare a saved config with a new one, key by key.

    Parameters
    ----------
    saved, new:
        The two configs as nested mappings (e.g. `RunDir.read_config` and the app's own).
        Values compare with ``==``: an app that gives a null setting a meaning (a default
        decided elsewhere) replaces it by that value on both sides first.
    changeable:
        Dotted keys (``"train.steps"``) and sections (``"logging."``) that may change, or a test
        of a dotted key (True: it may change, e.g. by its field's metadata); every other key
        must be equal.

    Returns
    -------
    ConfigChanges
        ``allowed`` and ``refused`` differences; both empty when nothing changed.
    """
    patterns = () if callable(changeable) else tuple(changeable)
    may_change = changeable if callable(changeable) else lambda key: key_matches(key, patterns)
    a, b = flatten_config(saved), flatten_config(new)
    allowed: Diff = {}
    refused: Diff = {}
    for key in sorted(a.keys() | b.keys()):
        old, now = a.get(key), b.get(key)
        if old != now:
            (allowed if may_change(key) else refused)[key] = (old, now)
    return ConfigChanges(allowed, refused)


def describe_changes(diff: Mapping[str, tuple[object, object]]) -> str:
    """``"model.d_model 32 → 64, train.steps 600 → 900"``: each key with its two values (repr)."""
    return ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in diff.items())


__all__ = ["ConfigChanges", "config_changes", "describe_changes", "flatten_config", "key_matches"]
