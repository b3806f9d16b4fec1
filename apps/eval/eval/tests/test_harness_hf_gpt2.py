"""GPT-2 weights score the same under the ``tjx`` harness model as under transformers' GPT-2.

transformers and PyTorch live only in the peers' scratch venv (tests-support's ``tjx_peers``:
the versions every peer pins, torch a CPU build from this machine's disk); they never enter the
project's resolve. The peer builds a
tiny random GPT-2, saves it in HF's format and scores the same (context, continuation) token pairs
as HFLM does (log-softmax of the logits, summed over the continuation, HFLM's left truncation)
in float64; tjx loads the folder with tjx.nn's HF GPT-2 loader and scores them through
``TjxLM._loglikelihood_tokens`` (sorted, batched, padded to buckets).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import tjx_peers

from eval.harness_model import TjxLM
from tjx import nn

#: What the peer imports, each at its pin (tests-integration's HF peers share the venv).
PEER_PACKAGES = ("torch", "transformers", "safetensors", "numpy")
MAX_LEN = 64

PEER = r"""
import json, sys
from pathlib import Path
import torch
from transformers import GPT2Config, GPT2LMHeadModel

out, max_len = Path(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(int(sys.argv[3]))
config = GPT2Config(vocab_size=300, n_positions=max_len, n_embd=32, n_layer=2, n_head=2)
model = GPT2LMHeadModel(config).eval()
model.save_pretrained(out / "gpt2", safe_serialization=True)
scores = []
for ctx, cont in json.loads((out / "pairs.json").read_text()):
    seq = (ctx + cont)[-(max_len + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0].double()
    k, n = len(seq) - 1, len(cont)
    target = torch.tensor(seq[-n:])
    logp = torch.log_softmax(logits[k - n : k], -1).gather(-1, target[:, None]).sum()
    greedy = bool((logits[k - n : k].argmax(-1) == target).all())
    scores.append([float(logp), greedy])
(out / "scores.json").write_text(json.dumps(scores))
"""


def _peer_python() -> Path:
    """The scratch venv's interpreter: the peers' venv (tests-support's ``tjx_peers``: the same
    path, pins and lock as tests-integration's HF peers and the experiments' nanoGPT peer), so a
    machine installs torch and transformers once for all of them."""
    return tjx_peers.peer_python(tjx_peers.venv_path(), PEER_PACKAGES)


def test_gpt2_scores_equal_transformers_gpt2_on_the_same_pairs(tmp_path, rng):
    pairs = []
    for _ in range(10):
        ctx = rng.integers(0, 300, int(rng.integers(1, 40))).tolist()
        pairs.append((ctx, rng.integers(0, 300, int(rng.integers(1, 8))).tolist()))
    pairs.append((rng.integers(0, 300, 70).tolist(), [5, 6, 7]))  # left-truncated
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "peer.py").write_text(PEER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its own venv only
    # One torch thread: tiny tensors, and torch's OpenMP workers spin waiting for each small op
    # (as tests-integration's HF peers, _hf_peer.run_peer).
    env["OMP_NUM_THREADS"] = "1"
    cmd = [str(_peer_python()), str(tmp_path / "peer.py"), str(tmp_path), str(MAX_LEN), "7"]
    peer = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    assert peer.returncode == 0, f"peer ({tjx_peers.versions_line(PEER_PACKAGES)}): {peer.stderr}"
    want = json.loads((tmp_path / "scores.json").read_text())

    model = nn.load_hf_gpt2(tmp_path / "gpt2")
    run = SimpleNamespace(
        run_dir=tmp_path, model=model, objective=nn.objective_of(model), tokenizer=None
    )
    lm = TjxLM(run=run, batch_size=4)
    got = lm._loglikelihood_tokens([(None, c, x) for c, x in pairs], disable_tqdm=True)
    for (score, greedy), (ref, ref_greedy) in zip(got, want, strict=True):
        assert score == pytest.approx(ref, abs=2e-4)
        assert greedy == ref_greedy
