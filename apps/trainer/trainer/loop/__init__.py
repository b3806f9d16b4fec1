"""The trainer's fourth room: a run's steps, from its restore to its last files.

The step loop (`training`: restore, log, evaluate, checkpoint, finish), held-out metrics and
samples (`evaluation`), what a line and the bar say while it runs (`step_log`, `progress`), a
``--resume``'s checks (`resume`) and where a command line's run directory is (`location`), and
the processes joined and stopped together (`multihost`). Named ``loop``, not ``run``: the
package's face exports the function ``trainer.run``. Imports the `config`, `step` and `plan`
rooms only (``config`` ← ``step`` ← ``plan`` ← ``loop`` ← ``start`` ← ``cli``).
"""
