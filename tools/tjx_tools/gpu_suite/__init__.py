"""tjx on a GPU in one command: kernel correctness, attention speed, the train step, a real run.

A GPU is lent to a session for 30 device-minutes by chance, so everything here is ready before it
comes and spends the minutes measuring. ``tools/gpu_suite`` is the entry point (it sets the source
roots, installs carried wheels, points the data cache at the carried corpus and turns JAX's GPU
preallocation off, so the trainer it starts as a child gets the memory it needs); the subcommands:

``prepare``
    On the development machine: build ``.gpu/`` (GPT-2-tokenized built-in corpus, the GPT-2
    tokenizer) that travels with the working tree to the GPU machine, which has no network.
``run --out DIR [--part kernels|train|all] [--smoke]``
    Measure. Each row is written to ``DIR/results.json`` and ``DIR/results.md`` as soon as it is
    measured, so a call cut off at its time limit still returns what it measured; a cell that
    raises (a kernel that does not compile) is one failed row or note, and the section goes on.
    JAX's persistent compilation cache is on (``TJX_COMPILATION_CACHE_DIR``, default
    ``~/.cache/tjx/jax-compilation``), so the second call and the trainer child skip compiles.
``fold DIR [DIR ...]``
    Fold the results' tables into BENCHMARKS.md, and the tuned launch parameters and the measured
    fwd+bwd times of the kernels found correct (the ``timings`` ``auto`` ranks by) into
    tjx-kernels' per-device table.

Sections, in order: ``environment`` (device, driver, versions, a measured 8k bf16 matmul peak),
``kernels`` (flash / cuDNN / XLA against a float64 reference), ``tune`` (launch parameters),
``attention`` (speed against cuDNN, XLA, JAX's Pallas kernel and JAX's Mosaic GPU attention where
it imports), ``train_step`` (gpt2_small tokens/s and MFU with Pallas, cuDNN and XLA by name on the
same batch, largest batch, medium/large memory fit, compile time, a 3-step profile) and
``train_run`` (gpt2_small from scratch on the carried corpus: loss curve, tokens/s, MFU).
``--smoke`` runs every section end to end on CPU with tiny shapes and interpreted Pallas; its
figures are checks of the harness, never performance.
"""
