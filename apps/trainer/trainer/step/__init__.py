"""The trainer's second room: the step and what it steps.

The jitted train and eval steps (`train_step`), the typed train state (`train_state`) and its
build (`state`: model, mesh, the start from a run or a Hugging Face checkpoint, `init_from` and
its checks `init_checks`), the DPO and GRPO compositions (`dpo`, `grpo`) and the data the step
takes (`data_setup`). Imports the `config` room only (``config`` ← ``step`` ← ``plan`` ←
``loop`` ← ``start`` ← ``cli``).
"""
