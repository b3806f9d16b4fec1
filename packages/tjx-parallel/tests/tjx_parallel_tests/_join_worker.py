"""One process of the two-process join test: `python _join_worker.py PID PORT TOLD CONFIG`.

Joins a run of two through :func:`tjx.parallel.join` (the same values on both: it returns), then
checks agreement once more with what this process was told (``TOLD`` processes, ``CONFIG``):
prints the one error line and exits 2 when the processes disagree, prints ``agreed`` otherwise.
"""

from __future__ import annotations

import sys

from tjx.parallel import DisagreementError, join, require_agreement

LINES = {
    "num_processes": "--num-processes: the run has {expected} but they were told {each}",
    "config": "config: process(es) {differ} differ from process 0",
}


def main() -> None:
    pid, port, told, config = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    info = join(f"127.0.0.1:{port}", 2, pid, values={"config": "same"}, timeout_s=60)
    print(f"joined: process {info.process_id} of {info.num_processes}", flush=True)
    try:
        require_agreement({"config": config}, num_processes=told, lines=LINES)
    except DisagreementError as err:
        print(err, flush=True)
        sys.exit(2)
    print("agreed", flush=True)


if __name__ == "__main__":
    main()
