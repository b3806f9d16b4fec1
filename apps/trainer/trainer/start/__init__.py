"""The trainer's fifth room: a run started, or a run's steps started again.

A run's start-up (`startup`: join the processes, the devices said (`device_notes`), everything
that can fail prepared, then the loop), ``train.gpu_autotune`` as XLA flags set before JAX starts
(`xla_flags`), and ``--replay RUN`` (`replay`), which prepares a run as a resume does. Imports
every room to its left (``config`` ← ``step`` ← ``plan`` ← ``loop`` ← ``start`` ← ``cli``).
"""
