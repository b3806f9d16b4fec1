"""One training job's own parts, told in one place: its run directory (`folder`: the layout over
tjx.ckpt's storage), where it starts and what a resume may change (`start`, `changes`,
`init_checks`), the step it plans and the report of that plan (`step_plan`, `plan_report`), and
what it says while it runs (`device_notes`, `step_log`, `progress`).

The libraries keep the reusable parts these call (tjx.ckpt's run folder and checkpoints,
tjx-metrics' roofline and compiled-memory fit, tjx.nn's HF reading and FLOP counts).
"""
