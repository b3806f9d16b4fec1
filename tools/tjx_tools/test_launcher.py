"""Tests of ./pants' own logic (sourced, so nothing is installed): which CA bundle it finds, and
the one-line errors when the bundle is missing or unusable."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[2] / "pants"


def launcher(call: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Source ./pants (which then only defines its functions) and run ``call``."""
    script = f'launcher="$1"; shift; source "$launcher"; {call}'
    return subprocess.run(
        ["bash", "-c", script, "bash", str(LAUNCHER), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No CA variables and no pip config files: a plain machine."""
    named = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
    env = {k: v for k, v in os.environ.items() if k not in named}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["HOME"] = str(tmp_path)
    return env


def python_with_pip() -> str:
    """An interpreter with pip, like the launcher's Python 3.9 (Pants' test venv has none)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), shutil.which("python3")]
    for candidate in filter(None, candidates):
        probe = [candidate, "-m", "pip", "--version"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    raise AssertionError("no Python with pip found to read pip's config with")


def pem(path: Path) -> Path:
    path.write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    return path


def test_the_first_named_bundle_wins(clean_env: dict[str, str], tmp_path: Path) -> None:
    first, second = pem(tmp_path / "a.pem"), pem(tmp_path / "b.pem")
    env = {**clean_env, "REQUESTS_CA_BUNDLE": str(second), "PIP_CERT": str(second)}
    result = launcher('ca_bundle "$1"', {**env, "SSL_CERT_FILE": str(first)}, sys.executable)
    assert result.stdout == f"SSL_CERT_FILE {first}\n", result.stderr
    result = launcher('ca_bundle "$1"', env, sys.executable)
    assert result.stdout == f"REQUESTS_CA_BUNDLE {second}\n", result.stderr


def test_pips_own_cert_setting_is_read(clean_env: dict[str, str], tmp_path: Path) -> None:
    bundle = pem(tmp_path / "corp.pem")
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\ncert = {bundle}\nconstraint = /nowhere/constraints.txt\n")
    env = {**clean_env, "PIP_CONFIG_FILE": str(config)}
    result = launcher('ca_bundle "$1"', env, python_with_pip())
    assert result.stdout == f"pip-config {bundle}\n", result.stderr


def test_a_plain_machine_uses_the_systems_bundle(clean_env: dict[str, str]) -> None:
    # Nothing named: the system's default bundle, so every tool trusts what the system trusts.
    result = launcher('ca_bundle "$1"', clean_env, sys.executable)
    default = ssl.get_default_verify_paths().openssl_cafile
    expected = f"system {default}\n" if default and os.path.isfile(default) else ""
    assert result.returncode == 0 and result.stdout == expected, result.stderr


@pytest.mark.parametrize("name", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"])
def test_a_missing_bundle_is_one_clear_line(clean_env: dict[str, str], name: str) -> None:
    env = {**clean_env, name: "/no/such/ca.pem"}
    result = launcher('ca_bundle "$1"', env, sys.executable)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"pants: {name} names the CA bundle '/no/such/ca.pem'")
    assert f"point {name} at your network's CA bundle" in line


def test_an_unusable_bundle_stops_before_any_download(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    # A file that is no certificate fails when the bundle is loaded, before any connection.
    bundle = pem(tmp_path / "bad.pem")
    call = 'check_network "$1" SSL_CERT_FILE "$2"'
    result = launcher(call, clean_env, sys.executable, str(bundle))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    expected = f"pants: cannot download from PyPI with the CA bundle {bundle} (from SSL_CERT_FILE)"
    assert line.startswith(expected)
    assert line.endswith("point SSL_CERT_FILE at the CA bundle it needs")
