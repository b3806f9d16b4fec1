"""transformers' side of the HF round-trip tests; runs ONLY in the scratch venv (torch inside).

``python _hf_peer_script.py JOBS.json`` runs a list of jobs in one process (torch loads once):
``{"make": SPEC, "out": FOLDER}`` builds a tiny random model (``AutoConfig.for_model(**SPEC
["config"])``, norms and biases random too), saves it to ``FOLDER`` (safetensors, SPEC's
``max_shard_size`` if given) and scores it into ``FOLDER/peer.npz``; ``{"score": FOLDER,
"tokens": NPY, "out": NPZ, "new": N}`` loads a folder with ``AutoModelForCausalLM.
from_pretrained`` and scores it. Scoring writes float32 logits of the tokens, a greedy
continuation (``new`` tokens) of their first row's first 4 tokens and the class name (and,
with ``"short": N`` in a SPEC or score job, the logits of the tokens' first N columns as
``logits_short``). A
``make`` SPEC with ``"bf16": true`` also scores the model cast to bfloat16 into
``FOLDER/peer_bf16.npz``; SPEC's ``random_buffers`` (name endings) get random values too (and
its ``random_scales``, parameters that start at one, values around one), and
SPEC's ``auto`` names the transformers auto class that builds it (default
``AutoModelForCausalLM``; e.g. ``AutoModelForImageTextToText`` for an image-text folder).
Attention is transformers' eager path (its reference, the only one that soft-caps Gemma 2's
logits). The post-training jobs (``chat``, ``peft``, ``dpo``, ``grpo``: chat templates, PEFT
adapters, TRL's DPO and GRPO losses) are ``_hf_peer_post``'s; ``quantize`` (a made folder
quantized as the published FP8 and MXFP4 folders are, loaded back dequantized) is
``_hf_peer_quant``'s.
``{"rope": [{"config": CONFIG, "seq_len": N or null}, ...], "out": NPZ}`` writes, per entry,
the inverse frequencies (``inv_<i>``) and attention factor (``factor_<i>``) that
``modeling_rope_utils`` computes for ``AutoConfig.for_model(**CONFIG)`` at that length.
``{"delta_layer": CONFIG, "inputs": NPY, "out": NPZ}`` builds transformers'
``Qwen3_5GatedDeltaNet`` (layer 0 of ``AutoConfig.for_model(**CONFIG)``) in float64 with random
weights, runs it on the inputs (its chunked path) and writes each weight (``w/<name>``) and the
output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch  # pants: no-infer-dep (the scratch venv's, never the resolve's)
import transformers  # pants: no-infer-dep
from transformers import AutoConfig, AutoModelForCausalLM  # pants: no-infer-dep

EAGER = {"attn_implementation": "eager"}


def score(
    model: torch.nn.Module, tokens: np.ndarray, new: int, out: Path, short: int | None = None
) -> None:
    model.eval()
    ids = torch.as_tensor(tokens, dtype=torch.long)
    extra = {}
    with torch.no_grad():
        logits = model(ids).logits.float().numpy()
        if short:  # a separate call: RoPE scalings that depend on the call's length see it
            extra["logits_short"] = model(ids[:, :short]).logits.float().numpy()
        prompt = ids[:1, :4]
        greedy = model.generate(prompt, max_new_tokens=new, do_sample=False, pad_token_id=0).numpy()
    arch = type(model).__name__
    np.savez(out, logits=logits, greedy=greedy, arch=np.asarray(arch), **extra)


def make(spec: dict, folder: Path) -> None:
    torch.manual_seed(spec.get("seed", 0))
    config = AutoConfig.for_model(**spec["config"])
    auto = getattr(transformers, spec.get("auto", "AutoModelForCausalLM"))
    model = auto.from_config(config, dtype=torch.float32, **EAGER)
    with torch.no_grad():  # random norms and biases too, so a swapped tensor shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif any(name.endswith(end) for end in spec.get("random_scales", ())):
                p.copy_(torch.randn_like(p) * 0.1 + 1.0)  # e.g. Gemma 4's per-expert scale
        for name, b in model.named_buffers():  # e.g. DeepSeek-V3's router correction bias
            if any(name.endswith(end) for end in spec.get("random_buffers", ())):
                b.copy_(torch.randn_like(b) * 0.1)
    kwargs = {"max_shard_size": spec["max_shard_size"]} if spec.get("max_shard_size") else {}
    model.save_pretrained(folder, **kwargs)
    tokens = np.asarray(spec["tokens"], dtype=np.int64)
    short = spec.get("short")
    score(model, tokens, spec["new"], folder / "peer.npz", short)
    if spec.get("bf16"):
        score(model.to(torch.bfloat16), tokens, spec["new"], folder / "peer_bf16.npz", short)


def rope(entries: list[dict], out: Path) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # pants: no-infer-dep

    arrays = {}
    for i, entry in enumerate(entries):
        config = AutoConfig.for_model(**entry["config"])
        kind = config.rope_parameters["rope_type"]
        inv, factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu", seq_len=entry["seq_len"])
        arrays[f"inv_{i}"] = inv.double().numpy()
        arrays[f"factor_{i}"] = np.asarray(float(factor))
    np.savez(out, **arrays)


def delta_layer(config: dict, inputs: Path, out: Path) -> None:
    import transformers.models.qwen3_5.modeling_qwen3_5 as qwen3_5  # pants: no-infer-dep

    torch.manual_seed(0)
    layer = qwen3_5.Qwen3_5GatedDeltaNet(AutoConfig.for_model(**config), layer_idx=0)
    layer = layer.double().eval()
    with torch.no_grad():  # every weight random, the gates' too
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        layer.A_log.copy_(torch.rand_like(layer.A_log))
    x = torch.as_tensor(np.load(inputs), dtype=torch.float64)
    with torch.no_grad():
        y = layer(x).numpy()
    weights = {f"w/{k}": v.detach().numpy() for k, v in layer.state_dict().items()}
    np.savez(out, out=y, **weights)


def main() -> None:
    for job in json.loads(Path(sys.argv[1]).read_text()):
        post = [key for key in ("chat", "peft", "dpo", "grpo") if key in job]
        if "rope" in job:
            rope(job["rope"], Path(job["out"]))
        elif "delta_layer" in job:
            delta_layer(job["delta_layer"], Path(job["inputs"]), Path(job["out"]))
        elif post:
            # The script's folder is on sys.path (the peer venv runs it as a file; the module is in
            # this target's sources, tests_integration/_*.py).
            from _hf_peer_post import JOBS  # pants: no-infer-dep

            JOBS[post[0]](job)
        elif "quantize" in job:
            from _hf_peer_quant import quantize  # pants: no-infer-dep

            quantize(job, score, EAGER)
        elif "make" in job:
            make(job["make"], Path(job["out"]))
        else:
            model = AutoModelForCausalLM.from_pretrained(job["score"], dtype=torch.float32, **EAGER)
            tokens, out = np.load(job["tokens"]), Path(job["out"])
            score(model, tokens, int(job["new"]), out, job.get("short"))


if __name__ == "__main__":
    main()
