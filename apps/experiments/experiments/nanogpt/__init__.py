"""tjx's train step against nanoGPT's recipe in PyTorch, side by side on the same CPU.

``python tools/bench_nanogpt.py`` (see `side_by_side`) makes a scratch venv with PyTorch (never the
project's resolve), writes one GPT-2's initial weights, starts a tjx worker (the trainer's own
jitted, donated step, loaded from those weights through ``--init-from``'s code path) and a PyTorch
worker (`peer/torch_gpt.py`, nanoGPT's architecture and AdamW), checks that both compute the same
first loss on the same batch, then alternates them every 2 steps and reports the median tokens/s.

Study 9 (`experiments.side`) drives the same workers for its losses; the code lives in this app,
not in tools/, because an app may not import tools (tools import it from here).
"""
