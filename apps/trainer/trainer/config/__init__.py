"""The trainer's first room: the typed config and what it is read from and written to.

`typed` (``Config``, ``StepConfig``, ``read_config``, ``resolve``), its schema (`schema`), the
trainer's own sections (`sections`, `grpo_settings`), a command line's settings as plain data
(`settings`), the named types of plain data (`seams`), the run directory the config is saved in
(`folder`) and what a resume changed in it (`changes`). The rooms import to their left only:
``config`` ← ``step`` ← ``plan`` ← ``loop`` ← ``start`` ← ``cli``; this one imports no other.
"""
