"""`pants run apps/trainer -- --config NAME`: the training CLI."""

from __future__ import annotations

import sys

from tjx.parallel.preemption import exit_now
from trainer.cli import main
from trainer.plan.run_plan import INTERRUPTED

if __name__ == "__main__":
    code = main()
    if code == INTERRUPTED:
        # Stopped at once by Ctrl-C: orbax's threads (an async save, a restore) may still be
        # running, and the interpreter's shutdown would make them fail loudly. The newest
        # committed step is intact; leave now (stdout flushed), without running them on.
        sys.stderr.flush()
        exit_now(code)
    sys.exit(code)
