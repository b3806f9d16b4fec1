"""A tjx run directory as an lm-evaluation-harness model, registered as ``tjx``.

``import eval.harness_model`` registers it: ``lm_eval.simple_evaluate(model="tjx",
model_args="checkpoint=RUN_DIR")`` then works (lm-eval 0.4 discovers models only by import; see
``eval.lm_eval_cli`` for its command line). Tokenization follows the harness's HF backend
(``lm_eval.models.huggingface.HFLM``) for a causal model so that scores are comparable:

* context/continuation split: ``TemplateLM.loglikelihood`` / ``_encode_pair`` (inherited, not
  copied): trailing spaces of the context move to the continuation, the pair is encoded whole and
  the continuation is what follows the context's own encoding; an empty context is the EOS token
  (``prefix_token_id`` = ``eot_token_id`` = the tokenizer's EOS, as for GPT-2 in HFLM).
* no special tokens are added by ``tok_encode`` (HFLM's default for causal models; tjx
  tokenizers never add any).
* max length: the model's ``max_seq_len`` (HFLM reads ``n_positions`` /
  ``max_position_embeddings``).
* left truncation: a scored row is ``(context + continuation)[-(max_length + 1):]`` and the model
  reads all but its last token; ``generate_until`` keeps a context's last
  ``max_length - max_gen_toks`` tokens; rolling windows come from the harness's own
  ``get_rolling_token_windows(prefix_token=EOS, max_seq_len=max_length, context_len=1)``.
* stop sequences: decoding stops at EOS or ``max_gen_toks``, then the text is cut at the first
  stop sequence with the harness's ``postprocess_generated_text`` (EOS's text joins ``until``);
  HFLM stops its decode loop early on a stop string, which changes the time, not the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (the built-in names stay registered next to ours)
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    Collator,
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from eval.harness_scoring import Scorer, bucket_for, length_buckets
from eval.hf_checkpoint import load_checkpoint
from eval.runs import LoadedRun, RunError
from tjx import nn

#: Tokens ``generate_until`` may add when a task does not say (HFLM's ``max_gen_toks``).
MAX_GEN_TOKS = 256


def check_decoder(run: LoadedRun) -> None:
    """`RunError` (one line) unless the run is a causal decoder: the only kind the harness
    scores."""
    objective = run.objective
    if objective.name != "lm":
        what = {"mlm": "a BERT masked-LM encoder", "classify": "a ViT image classifier"}.get(
            objective.name, f"a {objective.name} model"
        )
        raise RunError(
            f"--checkpoint: {str(run.run_dir)!r} is {what}; the harness scores causal decoders "
            "(GPT-2, LLaMA-style) that give every next token a probability"
        )


def _int_arg(name: str, value: Any) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise RunError(f"tjx model_args: {name} must be an int >= 1; got {value!r}") from None
    if out < 1:
        raise RunError(f"tjx model_args: {name} must be an int >= 1; got {value!r}")
    return out


@register_model("tjx")
class TjxLM(TemplateLM):
    """A trainer run's decoder behind the harness's ``LM`` interface.

    Parameters
    ----------
    checkpoint : str
        The run directory (``model_args=checkpoint=RUN_DIR``).
    step : int, optional
        Checkpoint step (default: the newest intact one).
    batch_size : int
        Rows per jitted call (the harness's ``--batch_size``; ``auto`` is refused: the shape
        buckets are fixed).
    seed : int
        Sampling seed of ``generate_until`` when a task samples (``do_sample``).
    run : LoadedRun, optional
        An already loaded run instead of ``checkpoint`` (the evaluator's ``--tasks``).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        step: int | str | None = None,
        batch_size: int | str = 8,
        seed: int | str = 0,
        run: LoadedRun | None = None,
        **_harness_args: Any,  # device, max_batch_size: JAX places arrays itself
    ) -> None:
        super().__init__()
        if run is None:
            if checkpoint is None:
                raise RunError(
                    "tjx model_args: give checkpoint=RUN_DIR (a trainer run directory or a "
                    "Hugging Face folder)"
                )
            run = load_checkpoint(Path(checkpoint), None if step is None else int(step))
        check_decoder(run)
        if str(batch_size).startswith("auto"):
            raise RunError("tjx model_args: batch_size=auto is not supported; give a number")
        self.run = run
        self.tokenizer_ = run.tokenizer
        self._batch_size = _int_arg("batch_size", batch_size)
        self.seed = int(seed)
        self.scorer = Scorer(run.model, self._batch_size)

    # -- what the harness reads -------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        """The tokenizer's EOS: also the empty-context prefix (HFLM for GPT-2 does the same)."""
        return int(self.tokenizer_.eos_id)

    @property
    def max_length(self) -> int:
        """The model's ``max_seq_len``."""
        return self.scorer.max_len

    @property
    def compiles(self) -> int:
        """Traces of the scoring function so far (bounded by the length buckets)."""
        return self.scorer.compiles

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        """Ids of ``string``; no special tokens are added (HFLM's causal-model default)."""
        return list(self.tokenizer_.encode_batch([string])[0])

    def tok_decode(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``."""
        return str(self.tokenizer_.decode([int(t) for t in tokens]))

    # -- scoring ----------------------------------------------------------------------------
    def _loglikelihood_tokens(
        self,
        requests: list[tuple[Any, list[int], list[int]]],
        disable_tqdm: bool = False,
        **_: Any,
    ) -> list[tuple[float, bool]]:
        """Scores of encoded (context, continuation) pairs: longest first (HFLM's order, so
        each block pads to few buckets), in blocks of ``batch_size``."""
        for _, ctx, cont in requests:
            if not ctx or not cont or len(cont) > self.max_length:
                raise ValueError(
                    f"a request needs a context, and 1..{self.max_length} continuation tokens"
                )

        def _order(req: tuple[Any, list[int], list[int]]) -> tuple[int, tuple[int, ...]]:
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        re_ord = Collator(requests, sort_fn=_order)
        out: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        for chunk in re_ord.get_batched(n=self._batch_size):
            # HFLM's left truncation: keep the last max_length + 1 tokens.
            seqs = [(ctx + cont)[-(self.max_length + 1) :] for _, ctx, cont in chunk]
            scores = self.scorer.score(seqs, [len(cont) for _, _, cont in chunk])
            for (key, _, _), answer in zip(chunk, scores, strict=True):
                out.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
            bar.update(len(chunk))
        bar.close()
        return list(re_ord.get_original(out))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Summed log-likelihood of each whole document over HFLM's disjoint rolling windows."""
        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (text,) in tqdm([req.args for req in requests], disable=disable_tqdm):
            doc = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            windows.extend((None, ctx, cont) for ctx, cont in doc)
            counts.append(len(doc))
        scores = self._loglikelihood_tokens(windows, disable_tqdm=True)
        out, start = [], 0
        for req, n in zip(requests, counts, strict=True):
            total = float(sum(s for s, _ in scores[start : start + n]))
            start += n
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    # -- generation -------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when a task says ``do_sample``) continuations cut at stop
        sequences; KV-cache decoding (tjx.nn's ``generate``) on bucketed prompt lengths."""

        def _order(req: tuple[str, dict[str, Any]]) -> tuple[int, str]:
            return -len(self.tok_encode(req[0])), req[0]

        re_ord = Collator(
            [req.args for req in requests],
            sort_fn=_order,
            group_by="gen_kwargs",
            group_fn=lambda x: x[1],
        )
        eos = self.tok_decode([self.eot_token_id])
        out: list[str] = []
        bar = tqdm(
            total=len(requests), disable=disable_tqdm, desc="Running generate_until requests"
        )
        for chunk in re_ord.get_batched(n=self._batch_size):
            contexts, all_kwargs = zip(*chunk, strict=True)
            kwargs = normalize_gen_kwargs(dict(all_kwargs[0]), MAX_GEN_TOKS)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            new = int(kwargs.pop("max_gen_toks"))
            max_ctx = self.max_length - new
            if max_ctx < 1:
                raise ValueError(
                    f"max_gen_toks {new} leaves no room for a context in max_length "
                    f"{self.max_length}"
                )
            # HFLM: left-truncate each context to its last max_length - max_gen_toks tokens.
            rows = [(self.tok_encode(c) or [self.eot_token_id])[-max_ctx:] for c in contexts]
            width = min(bucket_for(max(map(len, rows)), length_buckets(self.max_length)), max_ctx)
            prompts = np.full((self._batch_size, width), self.eot_token_id, np.int32)
            lengths = np.ones((self._batch_size,), np.int32)
            for r, row in enumerate(rows):
                prompts[r, : len(row)], lengths[r] = row, len(row)
            sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature") or 0) > 0
            ids = nn.generate(
                self.run.model,
                prompts,
                prompt_lengths=lengths,
                max_new_tokens=new,
                temperature=float(kwargs["temperature"]) if sample else 0.0,
                top_k=kwargs.get("top_k") if sample else None,
                top_p=kwargs.get("top_p") if sample else None,
                eos_id=self.eot_token_id,
                seed=self.seed if sample else None,
            )
            ids_np = np.asarray(ids)
            for r, (context, gen_kwargs) in enumerate(chunk):
                tail = ids_np[r, lengths[r] : lengths[r] + new].tolist()
                text = postprocess_generated_text(
                    generation=self.tok_decode(tail), stop=until, think_end_token=None
                )
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            bar.update(len(chunk))
        bar.close()
        return list(re_ord.get_original(out))
