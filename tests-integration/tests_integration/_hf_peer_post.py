"""The peers' side of the post-training tests; runs ONLY in the scratch venv (torch, transformers,
peft, trl inside), imported by ``_hf_peer_script.py``.

Jobs (dicts; ``_hf_peer_script.main`` dispatches on the key):

- ``{"chat": [FOLDER, ...], "conversations": [...], "out": JSON}``: for each tokenizer folder and
  conversation, ``apply_chat_template(..., return_assistant_tokens_mask=True)``'s ids and mask.
- ``{"peft": BASE, "adapter": FOLDER, "merged": FOLDER, "tokens": NPY, "out": NPZ}``: float32
  logits of ``PeftModel.from_pretrained(base, adapter)`` and of the merged checkpoint.
- ``{"dpo": SPEC, "out": NPZ}``: TRL's ``DPOTrainer`` on a fixed batch (in dataset order): the
  collated ids and masks, ``compute_loss`` and the gradients of every trainable parameter
  after ``loss.backward()``, and the metrics TRL logged. ``SPEC``: ``base`` (a folder with the
  tokenizer), ``adapter`` (a PEFT adapter: the policy is base + adapter, the reference the
  base with adapters disabled, TRL's reference for a fresh adapter) or ``policy`` (a
  checkpoint; the reference is ``base``), ``rows``, ``beta``, ``loss_type``, ``workdir``.
- ``{"grpo": SPEC, "out": NPZ}``: TRL's ``GRPOTrainer._compute_loss`` on fixed rollouts: its
  per-token log-probabilities and entropies of the completions, the loss, the gradient of every
  parameter after ``loss.backward()`` and the metrics it logged. ``SPEC``: ``policy`` (a folder
  with the tokenizer), ``npz`` (``prompt_ids``, ``completion_ids``, ``completion_mask``,
  ``advantages``, ``old_logps``, ``ref_logps``), ``group``, ``settings`` (``GRPOConfig``'s loss
  fields: ``beta``, ``epsilon``, ``loss_type``, ``importance_sampling_level``, ...),
  ``workdir``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch  # pants: no-infer-dep (the scratch venv's, never the resolve's)
from transformers import AutoModelForCausalLM, AutoTokenizer  # pants: no-infer-dep


def chat(job: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    for folder in job["chat"]:
        tok = AutoTokenizer.from_pretrained(folder)
        rendered = []
        for conversation in job["conversations"]:
            enc = tok.apply_chat_template(
                conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            rendered.append({"ids": list(enc["input_ids"]), "mask": list(enc["assistant_masks"])})
        out[folder] = rendered
    Path(job["out"]).write_text(json.dumps(out))


def _logits(model: torch.nn.Module, tokens: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def peft(job: dict[str, Any]) -> None:
    from peft import PeftModel  # pants: no-infer-dep

    tokens = np.load(job["tokens"])
    base = AutoModelForCausalLM.from_pretrained(job["peft"], dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, job["adapter"])
    merged = AutoModelForCausalLM.from_pretrained(job["merged"], dtype=torch.float32)
    np.savez(job["out"], adapted=_logits(adapted, tokens), merged=_logits(merged, tokens))


def _grads_and_metrics(trainer: Any) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A TRL trainer's gradients after ``loss.backward()`` (``grad:<name>``, every trainable
    parameter) and the last value of each metric it logged."""
    grads = {
        f"grad:{name}": p.grad.detach().float().numpy()
        for name, p in trainer.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }
    return grads, {k: float(v[-1]) for k, v in trainer._metrics["train"].items() if v}


def dpo(job: dict[str, Any]) -> None:
    from datasets import Dataset  # pants: no-infer-dep
    from trl import DPOConfig, DPOTrainer  # pants: no-infer-dep

    spec = job["dpo"]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(spec["base"])
    base = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
    if spec.get("adapter"):
        from peft import PeftModel  # pants: no-infer-dep

        model, ref = PeftModel.from_pretrained(base, spec["adapter"], is_trainable=True), None
    else:
        model = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
        ref = base
    rows = spec["rows"]
    args = DPOConfig(
        output_dir=spec["workdir"],
        beta=spec["beta"],
        loss_type=[spec["loss_type"]],
        per_device_train_batch_size=len(rows),
        max_length=None,
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
        precompute_ref_log_probs=False,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    if spec.get("adapter") and "ref" in trainer.model.peft_config:
        # TRL makes a pretrained adapter's reference a frozen copy of it ("ref"); a fresh
        # adapter's reference is the base, adapters disabled (tjx's `adapters_off`). The adapter
        # here stands for a fresh one some steps into training: drop the copy.
        trainer.model.delete_adapter("ref")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads, metrics = _grads_and_metrics(trainer)
    np.savez(
        job["out"],
        loss=np.asarray(float(loss.detach())),
        input_ids=batch["input_ids"].numpy(),
        completion_mask=batch["completion_mask"].numpy(),
        attention_mask=batch["attention_mask"].numpy(),
        metrics=np.asarray(json.dumps(metrics)),
        **grads,
    )


def grpo(job: dict[str, Any]) -> None:
    from datasets import Dataset  # pants: no-infer-dep
    from trl import GRPOConfig, GRPOTrainer  # pants: no-infer-dep

    spec = job["grpo"]
    torch.manual_seed(0)
    data = dict(np.load(spec["npz"]))
    rows, length = data["completion_ids"].shape
    args = GRPOConfig(
        output_dir=spec["workdir"],
        **spec["settings"],
        num_generations=spec["group"],
        per_device_train_batch_size=rows,
        max_completion_length=length,
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
    )
    trainer = GRPOTrainer(
        model=spec["policy"],
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "x"}] * rows),
    )
    trainer.model.float().train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, not run here
    mask = torch.as_tensor(data["completion_mask"], dtype=torch.long)
    prompt = torch.as_tensor(data["prompt_ids"], dtype=torch.long)
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": torch.as_tensor(data["completion_ids"], dtype=torch.long),
        "completion_mask": mask,
        "advantages": torch.as_tensor(data["advantages"], dtype=torch.float32),
        "old_per_token_logps": torch.as_tensor(data["old_logps"], dtype=torch.float32),
        "ref_per_token_logps": torch.as_tensor(data["ref_logps"], dtype=torch.float32),
        "num_items_in_batch": mask.sum(),
    }
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    with torch.no_grad():
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, torch.ones_like(ids), length, compute_entropy=True
        )
    grads, metrics = _grads_and_metrics(trainer)
    np.savez(
        job["out"],
        loss=np.asarray(float(loss.detach())),
        logps=logps.float().numpy(),
        entropies=entropies.float().numpy(),
        metrics=np.asarray(json.dumps(metrics)),
        **grads,
    )


JOBS = {"chat": chat, "peft": peft, "dpo": dpo, "grpo": grpo}
