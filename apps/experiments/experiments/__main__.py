"""`python -m experiments STUDY`: run a study of tjx and write its report."""

from __future__ import annotations

import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
