"""The trainer's third room: what a run will be, before it runs.

A validated command line (`run_plan`: ``RunPlan``, and the trainer's one error line and words on
a signal), the step as facts for a compile over abstract inputs (`step_plan`), the memory fit and
kernel choice on this machine (`memory_fit`), the step compiled once before step 1
(`first_compile`), ``--plan`` for a target that is not here (`target_plan`, its report
`plan_report`, an RL run's rollout estimate `rollout_plan`) and ``--search`` over candidate
configs (`search`). Imports the `config` and `step` rooms only (``config`` ← ``step`` ←
``plan`` ← ``loop`` ← ``start`` ← ``cli``).
"""
