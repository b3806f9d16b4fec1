"""tjx on a GPU in one command: kernel correctness, attention speed, the train step, a real run.

A GPU is lent to a session for 30 device-minutes by chance, so everything here is ready before it
comes and spends the minutes measuring. ``tools/gpu_suite`` is the entry point (it sets the source
roots, installs carried wheels and points the data cache at the carried corpus); the subcommands:

``prepare``
    On the development machine: build ``.gpu/`` (GPT-2-tokenized built-in corpus, the GPT-2
    tokenizer) that travels with the working tree to the GPU machine, which has no network.
``run --out DIR [--part kernels|train|all] [--smoke]``
    Measure. Each section is written to ``DIR/results.json`` and ``DIR/results.md`` as soon as it
    ends, so a call cut off at its time limit still returns what it measured.
``fold DIR [DIR ...]``
    Fold the results' tables into BENCHMARKS.md and the tuned launch parameters into tjx-kernels'
    per-device table.

Sections, in order: ``environment`` (device, driver, versions, a measured 8k bf16 matmul peak),
``kernels`` (flash / cuDNN / XLA against a float64 reference), ``tune`` (launch parameters),
``attention`` (speed against cuDNN, XLA and JAX's Pallas kernel), ``train_step`` (gpt2_small
tokens/s, MFU, largest batch, medium/large memory fit, compile time, a 3-step profile) and
``train_run`` (gpt2_small from scratch on the carried corpus: loss curve, tokens/s, MFU).
``--smoke`` runs every section end to end on CPU with tiny shapes and interpreted Pallas; its
figures are checks of the harness, never performance.
"""
