"""transformers' side of the HF round-trip tests; runs ONLY in the scratch venv (torch inside).

``python _hf_peer_script.py make SPEC.json OUT`` builds a tiny random model (``AutoConfig.
for_model(**config)``), saves it to ``OUT`` (safetensors, ``max_shard_size`` if given) and scores
it; ``python _hf_peer_script.py score FOLDER TOKENS.npy OUT.npz`` loads a folder with
``AutoModelForCausalLM.from_pretrained`` and scores it. Scoring writes float32 logits of the
tokens and a greedy continuation (``new`` tokens) of their first row's first 4 tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM


def score(model: torch.nn.Module, tokens: np.ndarray, new: int, out: Path) -> None:
    model.eval()
    ids = torch.as_tensor(tokens, dtype=torch.long)
    with torch.no_grad():
        logits = model(ids).logits.float().numpy()
        prompt = ids[:1, :4]
        greedy = model.generate(
            prompt, max_new_tokens=new, do_sample=False, pad_token_id=0
        ).numpy()
    arch = type(model).__name__
    np.savez(out, logits=logits, greedy=greedy, arch=np.asarray(arch))


def main() -> None:
    command = sys.argv[1]
    torch.manual_seed(0)
    if command == "make":
        spec = json.loads(Path(sys.argv[2]).read_text())
        folder = Path(sys.argv[3])
        config = AutoConfig.for_model(**spec["config"])
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():  # random norms and biases too, so a swapped tensor shows
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name or "ln_" in name:
                    p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
        kwargs = {"max_shard_size": spec["max_shard_size"]} if spec.get("max_shard_size") else {}
        model.to(getattr(torch, spec.get("dtype", "float32"))).save_pretrained(folder, **kwargs)
        model.float()
        tokens = np.asarray(spec["tokens"], dtype=np.int64)
        score(model, tokens, spec["new"], folder / "peer.npz")
    else:
        folder, tokens = Path(sys.argv[2]), np.load(sys.argv[3])
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        score(model, tokens, int(sys.argv[5]), Path(sys.argv[4]))


if __name__ == "__main__":
    main()
