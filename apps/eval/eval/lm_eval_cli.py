"""``python -m eval.lm_eval_cli --model tjx --model_args checkpoint=RUN_DIR --tasks ...``.

lm-eval 0.4 finds a model by name only once its module is imported (its registry has no plugin or
entry-point lookup for models, and ``--include_path`` reads task YAMLs, not models), so the bare
``lm_eval`` command cannot know ``tjx``. This is that command with ``tjx`` registered first: the
same arguments, the same output.
"""

from __future__ import annotations

import sys

from lm_eval.__main__ import cli_evaluate

import eval.harness_model  # noqa: F401  (registers "tjx")


def main() -> None:
    """Run lm-eval's own command line, the ``tjx`` model registered (at import, above)."""
    cli_evaluate()


if __name__ == "__main__":
    main()
    sys.exit(0)
