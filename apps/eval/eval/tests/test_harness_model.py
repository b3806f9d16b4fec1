"""The ``tjx`` harness model against independent references: float64 NumPy from the model's
logits, tjx's held-out summed loss, and tjx.nn's own greedy decoding."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import heldout
from eval.harness_model import TjxLM
from eval.runs import RunError
from eval.tests.harness_support import make_run, sentence
from tjx import nn

EOS = 256  # the byte tokenizer's EOS: one token per UTF-8 byte below it


def _req(*args):
    return SimpleNamespace(args=args)


def _logits(model, width: int) -> Callable[[list[int]], np.ndarray]:
    """The model's float64 logits of a sequence of at most ``width`` ids, read from one jitted
    forward over a buffer of that width (zeros after the sequence: causal attention never reads
    them). One program serves every length; called eagerly, the model dispatched op by op and
    each new length compiled every op again (the module's first test took 62 s in CI)."""
    forward = jax.jit(lambda ids: model(ids))

    def logits(seq: list[int]) -> np.ndarray:
        buffer = np.zeros((1, width), np.int32)
        buffer[0, : len(seq)] = seq
        return np.asarray(forward(jnp.asarray(buffer)), np.float64)[0, : len(seq)]

    return logits


def _reference(
    logits_of: Callable[[list[int]], np.ndarray], ctx: list[int], cont: list[int], max_len: int
) -> tuple[float, bool]:
    """float64 log-softmax of the model's logits (``_logits``), HFLM's left truncation."""
    seq = (ctx + cont)[-(max_len + 1) :]
    logits = logits_of(seq[:-1])
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    n = len(cont)
    rows, targets = np.arange(len(seq) - 1 - n, len(seq) - 1), np.asarray(seq[-n:])
    greedy = bool((logits[rows].argmax(-1) == targets).all())
    return float(logp[rows, targets].sum()), greedy


@pytest.fixture(scope="module")
def lm_and_model(tmp_path_factory):
    # One model for the module: its jitted scoring compiles once per bucket, not per test.
    run, model = make_run(tmp_path_factory.mktemp("harness"))
    return TjxLM(checkpoint=str(run), batch_size=4), model


def test_loglikelihood_matches_a_float64_numpy_reference(lm_and_model, rng):
    lm, model = lm_and_model
    pairs = [(sentence(rng, int(rng.integers(1, 6))), " " + sentence(rng, 2)) for _ in range(9)]
    pairs.append(("", "rose"))  # empty context: the EOS token conditions it
    pairs.append((sentence(rng, 30), " thou"))  # longer than max_seq_len: left-truncated
    got = lm.loglikelihood([_req(c, x) for c, x in pairs], disable_tqdm=True)
    logits_of = _logits(model, 64)
    for (ctx, cont), (score, greedy) in zip(pairs, got, strict=True):
        ctx_ids = list(ctx.encode()) or [EOS]
        want, want_greedy = _reference(logits_of, ctx_ids, list(cont.encode()), 64)
        assert score == pytest.approx(want, abs=2e-4), (ctx, cont)
        assert greedy == want_greedy


def test_loglikelihood_rolling_equals_heldout_summed_loss(lm_and_model, rng):
    lm, model = lm_and_model
    step = heldout.make_step(model)
    from flax import nnx

    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    short = "".join(rng.choice(list("abcdefgh rose"), size=40))
    long = "".join(rng.choice(list("abcdefgh rose"), size=128))  # two full 64-token windows
    got = lm.loglikelihood_rolling([_req(short), _req(long)], disable_tqdm=True)

    def heldout_sum(inputs: list[int], targets: list[int]) -> float:
        batch = {
            "inputs": jnp.asarray([inputs], jnp.int32),
            "targets": jnp.asarray([targets], jnp.int32),
        }
        return -float(step(params, batch)["sum_loss"])

    s = list(short.encode())
    assert got[0] == pytest.approx(heldout_sum([EOS] + s[:-1], s), abs=2e-4)
    t = list(long.encode())
    want = heldout_sum([EOS] + t[:63], t[:64]) + heldout_sum(t[63:127], t[64:])
    assert got[1] == pytest.approx(want, abs=4e-4)


def test_compilations_are_bounded_by_the_length_buckets_not_the_requests(lm_and_model, rng):
    lm = TjxLM(run=lm_and_model[0].run, batch_size=4)  # a fresh count
    pairs = [(sentence(rng, int(rng.integers(1, 12))), " " + sentence(rng, 1)) for _ in range(24)]
    batched = lm.loglikelihood([_req(*p) for p in pairs], disable_tqdm=True)
    assert 1 <= lm.compiles <= len(lm.scorer.buckets) == 2  # 32 and 64 for max_seq_len 64
    # Padding and sorting change nothing: one request per call gives the same scores.
    single = [lm.loglikelihood([_req(*p)], disable_tqdm=True)[0] for p in pairs[:6]]
    for (a, ga), (b, gb) in zip(batched[:6], single, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    assert lm.compiles <= 2


def test_generate_until_is_greedy_decoding_cut_at_the_first_stop_sequence(lm_and_model, rng):
    lm, model = lm_and_model
    contexts = [sentence(rng, int(rng.integers(1, 8))) for _ in range(5)]
    stops = ["e", "o"]
    got = lm.generate_until(
        [_req(c, {"until": stops, "max_gen_toks": 10, "do_sample": False}) for c in contexts],
        disable_tqdm=True,
    )
    for ctx, text in zip(contexts, got, strict=True):
        prompt = list(ctx.encode())
        out = np.asarray(nn.generate(model, [prompt], max_new_tokens=10, eos_id=EOS))[0]
        tail = bytes(int(t) for t in out[len(prompt) :] if t < EOS).decode("utf-8", "replace")
        want = tail
        for stop in stops:
            want = want.split(stop)[0]
        assert text == want


def test_a_non_decoder_run_is_refused_in_one_line(tmp_path):
    fields = {"vocab_size": 258, "max_seq_len": 32, "d_model": 16, "num_layers": 1, "num_heads": 2}
    run, _ = make_run(tmp_path, model_json={"class": "BertConfig", "fields": fields})
    with pytest.raises(RunError, match="BERT masked-LM encoder") as err:
        TjxLM(checkpoint=str(run))
    assert "\n" not in str(err.value)


def test_bad_model_args_are_refused(lm_and_model):
    lm, _ = lm_and_model
    with pytest.raises(RunError, match="batch_size=auto"):
        TjxLM(run=lm.run, batch_size="auto")
    with pytest.raises(RunError, match="batch_size must be an int >= 1"):
        TjxLM(run=lm.run, batch_size="0")
    with pytest.raises(RunError, match="checkpoint=RUN_DIR"):
        TjxLM()


def test_an_moe_run_is_scored_like_a_dense_one(tmp_path, rng):
    """#41: the harness model builds an MoE run from its ``model.json`` (the expert fields its
    ``moe`` section) and its scores are the float64 reference's of the same model."""
    fields = {
        "vocab_size": 257,
        "max_seq_len": 64,
        "d_model": 32,
        "num_layers": 2,
        "num_heads": 2,
        "moe": {"num_experts": 4, "experts_per_token": 2, "expert_mlp_dim": 32},
        "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
    }
    run, model = make_run(tmp_path, model_json={"class": "LlamaConfig", "fields": fields})
    assert model.config.moe.num_experts == 4
    lm = TjxLM(checkpoint=str(run), batch_size=2)
    pairs = [(sentence(rng, int(rng.integers(1, 6))), " " + sentence(rng, 2)) for _ in range(4)]
    got = lm.loglikelihood([_req(c, x) for c, x in pairs], disable_tqdm=True)
    logits_of = _logits(model, 64)  # dropless routing: the zeros after a sequence take no slot
    for (ctx, cont), (score, greedy) in zip(pairs, got, strict=True):
        want, want_greedy = _reference(logits_of, list(ctx.encode()), list(cont.encode()), 64)
        assert score == pytest.approx(want, abs=2e-4), (ctx, cont)
        assert greedy == want_greedy
