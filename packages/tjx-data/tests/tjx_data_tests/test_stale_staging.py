"""What a killed preparation leaves in the shared cache goes with the next preparation there
(#71 point 6: a ``kill -9`` while tokenizing left its staged shards, 301 MB, for good), and a
live preparation's staging is never touched (two trainers may prepare into one cache at once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tjx.data.cache import (
    OTHER_HOST_IDLE_S,
    OWNER_LOCK,
    UNOWNED_IDLE_S,
    file_lock,
    remove_stale_staging,
)
from tjx.data.run.prepare import prepare_run_data
from tjx_data_tests._helpers import child_env

# A preparation that stops for good once its train split is written in its staging box (where a
# kill -9 of a real tokenization leaves it): it says so in argv[3], then waits to be killed.
PREPARER = """
import sys, time
from pathlib import Path
from tjx.data import prepare
real = prepare.pretokenize
def stop_after_train(*args, **kwargs):
    index = real(*args, **kwargs)
    Path(sys.argv[3]).write_text("staged")
    time.sleep(600)
prepare.pretokenize = stop_after_train
from tjx.data.run.prepare import prepare_run_data
prepare_run_data(sys.argv[1], "byte", seq_len=4, cache_dir=sys.argv[2])
"""


def _corpus(path: Path, word: str) -> str:
    path.write_text("".join(f"{word} {i}: a line of a small corpus\n" for i in range(60)))
    return str(path)


def _preparer(corpus: str, cache: Path, ready: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", PREPARER, corpus, str(cache), str(ready)]
    return subprocess.Popen(cmd, env=child_env(), stderr=subprocess.PIPE)


def _wait_staged(proc: subprocess.Popen[bytes], ready: Path) -> None:
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the preparer never staged its train split"
        time.sleep(0.05)


def _boxes(cache: Path) -> set[Path]:
    return set(cache.rglob(".*.staged-*"))


def test_a_killed_preparations_staging_goes_and_a_live_ones_stays(tmp_path):
    cache = tmp_path / "cache"
    killed = _preparer(_corpus(tmp_path / "alpha.txt", "alpha"), cache, tmp_path / "a.ready")
    live = _preparer(_corpus(tmp_path / "beta.txt", "beta"), cache, tmp_path / "b.ready")
    try:
        _wait_staged(killed, tmp_path / "a.ready")
        _wait_staged(live, tmp_path / "b.ready")
        boxes = _boxes(cache)
        assert len(boxes) == 2 and all((b / "train" / "index.json").is_file() for b in boxes)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
        (dead,) = (b for b in boxes if "alpha-txt" in str(b))
        (alive,) = boxes - {dead}
        assert (alive / OWNER_LOCK).is_file()
        # Another dataset's preparation in the same cache: the dead box goes, the live one stays.
        run = prepare_run_data(_corpus(tmp_path / "gamma.txt", "gamma"), "byte", seq_len=4,
                               cache_dir=cache)  # fmt: skip
        assert run.train_dir is not None and (run.train_dir / "index.json").is_file()
        assert _boxes(cache) == {alive}
        assert not (dead.parent / "train").exists()  # nothing of the killed one was published
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    # Once the live one dies too, its box is the next preparation's to remove.
    assert remove_stale_staging(cache) == [alive] and _boxes(cache) == set()


def test_atomic_staging_goes_when_its_entry_is_free_and_other_boxes_by_age(tmp_path):
    stale = tmp_path / ".corpus-1.0.tmp-killed"  # atomic_prepare's, its entry's lock free
    busy = tmp_path / ".other-1.0.tmp-building"  # its entry's lock held: being built now
    key = tmp_path / "shards" / "key"
    old, young = key / ".train.staged-olderjax", key / ".validation.staged-olderjax"  # no lock
    # Another host's, its lock free here (a mount whose locks are local): by age as well.
    away_old, away_young = key / ".a.staged-otherhost", key / ".b.staged-otherhost"
    for box in (stale, busy, old, young, away_old, away_young):
        box.mkdir(parents=True)
        (box / "shard_00000.bin").write_bytes(b"\0" * 64)
    for box in (away_old, away_young):
        (box / OWNER_LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    for box, idle in ((old, UNOWNED_IDLE_S), (away_old, OTHER_HOST_IDLE_S)):
        long_ago = time.time() - idle - 60
        for path in [box, *box.rglob("*")]:
            os.utime(path, (long_ago, long_ago))
    with file_lock(tmp_path / ".other-1.0.lock", remove=True):
        assert sorted(remove_stale_staging(tmp_path)) == sorted([stale, old, away_old])
        assert busy.is_dir() and young.is_dir() and away_young.is_dir()
    # No lock file is left behind by the sweep (it took the free one, then removed it).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other-1.0.tmp-building", "shards"]
