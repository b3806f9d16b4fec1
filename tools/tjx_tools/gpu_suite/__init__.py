"""tjx on a GPU in one command: everything pending in one call, kernels, the train step, a run.

The device call (#68: everything pending, ≤ 10 minutes; the device tool's ``carry=[".gpu"]``,
``timeout_s=600``)::

    PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false tools/gpu_suite run --part all --out $OUT

A GPU is lent to a session by chance for about 15 device-minutes, its start included, so
everything here is ready before it comes and spends the minutes measuring, in one call
(`one_call`: its cells and their order). ``tools/gpu_suite`` is the entry point (it sets the
source roots, installs carried wheels, points the data cache at the carried corpus and turns
JAX's GPU preallocation off, so the trainer and the PyTorch peers it starts as children get the
memory they need); the subcommands:

``prepare``
    On the development machine: build ``.gpu/`` (GPT-2-tokenized built-in corpus, the GPT-2
    tokenizer) that travels with the working tree to the GPU machine, which has no network.
``run --out DIR [--part all|kernels|train|startup|full] [--smoke]``
    Measure: ``all`` (the default) is the one call of `one_call`; ``kernels``, ``train`` and
    ``startup`` are a device call each (the sections below); ``full`` is the three in turn (a smoke
    check: it does not fit one call). Each row is written to ``DIR/results.json`` and
    ``DIR/results.md`` as soon as it is measured, so a call cut off at its time limit still returns
    what it measured; a cell that raises (a kernel that does not compile) is one failed row or
    note, and the section goes on. JAX's persistent compilation cache is on
    (``TJX_COMPILATION_CACHE_DIR``, default ``~/.cache/tjx/jax-compilation``), so the second call
    and the trainer child skip compiles. ``--run-seconds 0`` leaves the train part's real training
    run out.
``fold DIR [DIR ...] [--table FILE.jsonl ...]``
    Fold the results' tables (and JSON-lines files measured in the same session, such as a peer's)
    into BENCHMARKS.md (and print them), and the tuned launch parameters and the measured fwd+bwd
    times of the kernels found correct (the ``timings`` ``auto`` ranks by: attention's, taken at
    sequence 1,024, and the gated delta rule's) into tjx-kernels' per-device table; every
    measured train step into the calibration cases, compiled into tjx-metrics' fixture where the
    deviceless compiler is installed, each case's calibrated estimate checked against ±10 %.

Sections of the parts ``kernels``, ``train`` and ``startup``, in order: ``environment`` (device,
driver, versions, a measured 8k bf16 matmul peak), ``kernels`` (flash / cuDNN / XLA against a
float64 reference), ``tune`` (launch parameters), ``attention`` (speed against cuDNN, XLA, JAX's
Pallas kernel and JAX's Mosaic GPU attention where it imports), ``train_step`` (gpt2_small as it
ships, tokens/s, MFU and kernels per step with ``auto``, Pallas, cuDNN, XLA and the fused loss,
llama_small, each step compiled once; nanoGPT's recipe in PyTorch on the same card;
gpt2_medium/large memory fit, the largest batch; a profile of the ``auto`` step), ``train_run``
(gpt2_small from scratch on the carried corpus: loss curve, tokens/s, MFU) and ``startup`` (issue
#52: ``python -m trainer`` to its first step, cold and warm compilation cache, per preset).
``--smoke`` runs every section end to end on CPU with tiny shapes and interpreted Pallas; its
figures are checks of the harness, never performance.
"""
