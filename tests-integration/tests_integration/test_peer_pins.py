"""The peers' scratch venv is at pinned versions, one place for every peer (#71): a venv at the
pins is used as it is, one off them is brought to them with pip or refused in one error."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import tjx_peers

# A stand-in interpreter: answers the version probe from versions.json, logs every call.
FAKE_PYTHON = r"""#!/bin/sh
here="$(dirname "$0")"
echo "$*" | tr "\n" " " | head -c 60 >> "$here/calls.log"; echo >> "$here/calls.log"
if [ "$1" = "-c" ]; then cat "$here/versions.json"; fi
"""


def _fake_venv(root: Path, versions: dict[str, str | None]) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (venv / "bin" / "versions.json").write_text(json.dumps({**versions, "pip": "25.0"}))
    return venv


def _calls(venv: Path) -> list[str]:
    return (venv / "bin" / "calls.log").read_text().splitlines()


def test_every_pin_is_one_exact_release_and_the_hf_peers_need_them_all():
    # compressed-tensors: the quantized-folder peer's alone (the others' venvs need not hold it).
    assert set(tjx_peers.QUANT_PEERS) == set(tjx_peers.PINS)
    assert set(tjx_peers.QUANT_PEERS) - set(tjx_peers.HF_PEERS) == {"compressed-tensors"}
    for name, version in tjx_peers.PINS.items():
        assert re.fullmatch(r"\d+(\.\d+){2}", version), (name, version)
    assert tjx_peers.requirements(("torch", "trl")) == [
        f"torch=={tjx_peers.PINS['torch']}",
        f"trl=={tjx_peers.PINS['trl']}",
    ]


def test_a_venv_at_the_pins_is_used_as_it_is(tmp_path):
    pinned = {name: tjx_peers.PINS[name] for name in tjx_peers.HF_PEERS}
    venv = _fake_venv(tmp_path, {**pinned, "torch": f"{tjx_peers.PINS['torch']}+cpu"})
    assert tjx_peers.peer_python(venv) == venv / "bin" / "python"
    assert [call.split()[0] for call in _calls(venv)] == ["-c"]  # probed once, no pip


def test_a_venv_off_the_pins_gets_them_from_pip_or_one_error_naming_them(tmp_path):
    old = {**{name: tjx_peers.PINS[name] for name in tjx_peers.HF_PEERS}, "transformers": "5.23.0"}
    venv = _fake_venv(tmp_path, {**old, "trl": None})
    said: list[str] = []
    with pytest.raises(tjx_peers.PeerVenvError) as caught:
        tjx_peers.peer_python(venv, say=said.append)  # the fake's pip changes nothing
    pinned = tjx_peers.PINS["transformers"]
    assert f"transformers 5.23.0 (pinned {pinned})" in str(caught.value)
    assert f"trl missing (pinned {tjx_peers.PINS['trl']})" in str(caught.value)
    assert said and f"transformers=={pinned}" in said[0]
    assert any(call.startswith("-m pip install --quiet torch==") for call in _calls(venv))
