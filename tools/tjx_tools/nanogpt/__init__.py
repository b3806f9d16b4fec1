"""Benchmark helpers around the nanoGPT side-by-side (``tools/bench_nanogpt.py``).

The side-by-side itself (the shapes, the two workers, the PyTorch peer and its scratch venv) is
the experiments app's, in ``apps/experiments/experiments/nanogpt`` (study 9 drives it too; an app
may not import tools). Here: `floor` (each matmul of a shape's step timed on its own) and `where`
(the trainer's step profiled: matmuls against the rest).
"""
