"""The attention kernel a model takes, read from its config: ``auto`` ranked by tjx.kernels and
tried with the caller's compile (one line per kernel that fails), xla silent unless asked, and a
split sequence's block kernel said with nothing compiled."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import kernels
from tjx import nn as tnn
from tjx.kernels import launch
from tjx_nn_tests._helpers import gpt2_tiny, llama_tiny

H100 = "NVIDIA H100 80GB HBM3"


def never(kernel: str) -> object:
    raise AssertionError(f"nothing to compile; asked for {kernel}")


@pytest.fixture
def h100(tmp_path, monkeypatch):
    """An H100 as the kernel target, with nothing measured in its launch table."""
    empty = tmp_path / "tables.json"
    empty.write_text(json.dumps({"schema": 1, "devices": {}}))
    monkeypatch.setenv(launch.ENV_VAR, str(empty))
    launch.clear_launch_cache()
    with kernels.target("gpu", H100, (9, 0)):
        yield
    launch.clear_launch_cache()


def _choose(config, build, say, **kw):
    """The (name, fell_back) of `resolve_attention` with an app's ``build``."""
    resolved = tnn.resolve_attention(config, build=build, say=say, **kw)
    return resolved.name, resolved.fell_back


def test_auto_on_a_cpu_is_xla_with_nothing_compiled():
    said: list[str] = []
    got = _choose(gpt2_tiny(), never, said.append)
    assert got == ("xla", False)
    assert said == ["attention: xla (auto: no CUDA GPU; XLA on cpu)"]


def test_xla_by_name_needs_no_choice_and_is_said_only_when_asked():
    said: list[str] = []
    cfg = gpt2_tiny(attention_impl="xla")
    assert _choose(cfg, never, said.append) == ("xla", False)
    assert said == []
    assert _choose(cfg, never, said.append, say_xla=True) == ("xla", False)
    assert said == ["attention: xla (model.attention_impl)"]


def test_a_kernel_that_fails_falls_back_in_one_line(h100):
    said, tried = [], []

    def build(kernel: str) -> object:
        tried.append(kernel)
        raise RuntimeError("cuDNN: no kernel for this call\nmore detail")

    cfg = gpt2_tiny(precision="bf16")
    assert _choose(cfg, build, said.append) == ("xla", True)
    assert tried == ["cudnn"]
    assert said == [
        f"attention: cudnn (auto: no tjx measurement for {H100} yet)",
        "attention: cudnn failed to lower or compile (RuntimeError: cuDNN: no kernel for this "
        "call); using xla",
    ]


def test_a_named_kernel_that_fails_raises_naming_the_setting(h100):
    def build(kernel: str) -> object:
        raise RuntimeError("Triton: out of shared memory")

    cfg = gpt2_tiny(attention_impl="pallas")
    with pytest.raises(kernels.KernelCompileError, match="attention: pallas failed"):
        _choose(cfg, build, lambda line: None)


def test_a_soft_capped_model_leaves_cudnn_out(h100):
    said: list[str] = []
    cfg = llama_tiny(precision="bf16", attention=tnn.AttentionConfig(logit_softcap=50.0))
    kernel, _ = _choose(cfg, lambda k: None, said.append)
    assert kernel != "cudnn" and "cudnn skipped: it cannot soft-cap the logits" in said[0]


def test_a_split_sequence_says_its_block_kernel_and_compiles_nothing(h100):
    said: list[str] = []
    got = _choose(gpt2_tiny(), never, said.append, context_ways=4, context_strategy="all_gather")
    assert got == ("auto", False)
    assert said == [
        "attention: pallas blocks, all_gather across mesh.context=4 (model.attention_impl=auto; "
        "cuDNN has no split forward and backward)"
    ]


def test_a_windowed_split_takes_the_xla_blocks_and_the_line_names_the_setting():
    cfg = llama_tiny(attention=tnn.AttentionConfig(sliding_window=4))
    line = tnn.split_kernel_line(cfg, 2, "ring", named_by="the run's model.attention_impl")
    assert line == (
        "attention: xla blocks, ring across mesh.context=2 (windowed, the run's "
        "model.attention_impl=auto; cuDNN has no split forward and backward)"
    )
    assert tnn.split_kernel_line(cfg, 1, "ring") is None  # not split
    with pytest.raises(ValueError, match="cuDNN has no separate forward"):
        tnn.split_kernel_line(gpt2_tiny(attention_impl="cudnn"), 2, "ring")


def _attend(layer: tnn.Attention, x):
    return layer(x, positions=jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2]))[0]


def test_a_model_resolves_its_kernel_once_when_built_and_its_calls_only_run_it(monkeypatch):
    """The layer's ``attention_impl`` becomes an AttentionKernel when it is built; a call runs
    it: neither tjx.kernels' resolution nor its ranking is consulted again."""
    from tjx.kernels import choice, dispatch

    resolved: list[str] = []
    real = kernels.resolve_attention

    def counted(impl, *args, **kw):
        resolved.append(impl)
        return real(impl, *args, **kw)

    monkeypatch.setattr(tnn.kernel_choice, "_RESOLVED", {})  # a fresh memo: resolved here
    monkeypatch.setattr(kernels, "resolve_attention", counted)
    layer = tnn.Attention(llama_tiny(), rngs=nnx.Rngs(0), causal=True)
    assert resolved == ["auto"] and layer.kernel is kernels.AttentionKernel.XLA  # a CPU: XLA
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 8, 32)), jnp.float32)
    before = _attend(layer, x)
    before_jit = jax.jit(lambda x: _attend(layer, x))(x)  # XLA's fusions round differently

    def never(*args, **kwargs):
        raise AssertionError("the kernel choice was consulted per call")

    for module, name in ((kernels, "resolve_attention"), (dispatch, "resolve_attention")):
        monkeypatch.setattr(module, name, never)
    monkeypatch.setattr(choice, "auto_order", never)
    for _ in range(2):  # eager and traced calls alike (each jit a fresh trace)
        np.testing.assert_array_equal(_attend(layer, x), before)
        np.testing.assert_array_equal(jax.jit(lambda x: _attend(layer, x))(x), before_jit)
    assert resolved == ["auto"]


def test_a_model_built_for_an_h100_holds_the_h100s_kernel(h100):
    layer = tnn.Attention(llama_tiny(precision="bf16"), rngs=nnx.Rngs(0), causal=True)
    assert layer.kernel is kernels.AttentionKernel.CUDNN  # nothing measured: cuDNN serves it
    capped = llama_tiny(precision="bf16", attention=tnn.AttentionConfig(logit_softcap=50.0))
    assert tnn.Attention(capped, rngs=nnx.Rngs(0), causal=True).kernel == "xla"


def test_a_kernel_that_cannot_serve_the_model_is_refused_once_when_it_is_built():
    """A named kernel the device cannot run is refused with tjx.kernels' one line at build time
    (the trainer's kernel choice turns it into its config error), never at a call."""
    with pytest.raises(ValueError) as err:
        tnn.Attention(llama_tiny(attention_impl="cudnn"), rngs=nnx.Rngs(0), causal=True)
    assert str(err.value) == "implementation='cudnn' needs a CUDA GPU; this run's device is cpu"


def _layer_kernels(model) -> list[tuple[bool, bool, str]]:
    """(causal, cross, kernel) of each attention layer of ``model``."""
    return [
        (m.causal, m.cross, m.kernel)
        for _, m in nnx.iter_graph(model)
        if isinstance(m, tnn.Attention)
    ]


def _count_resolutions(monkeypatch) -> list[str]:
    """The implementation names ``tjx.kernels.resolve_attention`` is called with from now on."""
    calls: list[str] = []
    real = kernels.resolve_attention

    def counted(impl, *args, **kw):
        calls.append(impl)
        return real(impl, *args, **kw)

    monkeypatch.setattr(kernels, "resolve_attention", counted)
    return calls


ENCDEC = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=1, num_heads=4)


@pytest.mark.parametrize(
    "config",
    [
        gpt2_tiny(num_layers=1, precision="bf16"),
        llama_tiny(
            num_layers=1,
            precision="bf16",
            attention=tnn.AttentionConfig(sliding_window=4, logit_softcap=30.0),
        ),
        tnn.make_config(
            tnn.BertConfig,
            {**ENCDEC, "precision": "bf16", "attention": tnn.AttentionConfig(sliding_window=4)},
        ),
        tnn.make_config(
            tnn.EncoderDecoderConfig,
            {**ENCDEC, "precision": "bf16", "attention": tnn.AttentionConfig(sliding_window=4)},
        ),
    ],
    ids=["gpt2", "gemma-like", "bert-windowed", "encdec-windowed"],
)
def test_a_model_built_after_its_kernel_choice_runs_that_resolution(config, h100, monkeypatch):
    """The kernel choice resolves each kind of layer the family builds, once; a model built
    afterwards holds those kernels per layer and resolves nothing again. On an H100 with nothing
    measured a causal layer takes cuDNN, a soft-capped one or a bidirectional window XLA."""
    calls = _count_resolutions(monkeypatch)
    _choose(config, lambda kernel: None, lambda line: None)
    kinds = type(config).attention_layers
    # One resolution per distinct call (an encoder-decoder's causal and cross layers ask alike).
    distinct = {tnn.kernel_choice._call(config, kind) for kind in kinds}
    assert calls == ["auto"] * len(distinct)
    resolved = tnn.resolve_attention(config)
    model = nnx.eval_shape(lambda: tnn.build_model(config, rngs=nnx.Rngs(0)))
    assert calls == ["auto"] * len(distinct)  # the build resolved nothing again
    layers = _layer_kernels(model)
    assert {kind for kind, _ in resolved.by_kind} == {
        tnn.kernel_choice.layer_kind(causal=c, cross=x) for c, x, _ in layers
    }
    for causal, cross, kernel in layers:
        assert kernel is resolved.kernel(tnn.kernel_choice.layer_kind(causal=causal, cross=cross))
    # Each kind resolved as a layer built alone resolves its own (tjx.kernels' rules).
    for kind, kernel in resolved.by_kind:
        layer = tnn.Attention(
            config, rngs=nnx.Rngs(0), causal=kind == "causal", cross=kind == "cross"
        )
        assert layer.kernel is kernel
    want = {"causal": "xla" if config.attention.logit_softcap else "cudnn", "cross": "cudnn"}
    want["bidirectional"] = "xla" if config.attention.sliding_window else "cudnn"
    assert dict(resolved.by_kind) == {kind: want[kind] for kind in kinds}


def test_a_deepseek_layer_resolves_for_the_wider_of_its_key_and_value_heads():
    """DeepSeek's MLA runs its kernels at max(head_dim, v_head_dim); the other kinds at head_dim."""
    mla = tnn.MLAConfig(kv_latent_dim=16, qk_rope_head_dim=4, v_head_dim=12)
    cfg = llama_tiny(mla=mla, num_kv_heads=4, attention=tnn.AttentionConfig(type="mla"))
    assert tnn.kernel_choice.attention_width(cfg, "causal") == 12
    layer = tnn.Attention(cfg, rngs=nnx.Rngs(0), causal=True)
    assert layer.width == 12
    narrow = cfg.replace(**{"mla.v_head_dim": 4})
    assert tnn.kernel_choice.attention_width(narrow, "causal") == 8
    with pytest.raises(ValueError, match="attention kind must be one of"):
        tnn.kernel_choice.attention_width(cfg, "sideways")


def test_a_resolution_is_kept_until_the_launch_tables_are_read_again(h100, monkeypatch):
    # A fresh memo: an earlier test in this process may have resolved these layers already.
    monkeypatch.setattr(tnn.kernel_choice, "_RESOLVED", {})
    calls = _count_resolutions(monkeypatch)
    cfg = llama_tiny(precision="bf16", num_layers=1)
    first = tnn.resolve_attention(cfg, kinds=["causal"]).kernel("causal")
    again = tnn.resolve_attention(cfg.replace(remat="full"), kinds=["causal"])
    assert again.kernel("causal") is first
    assert calls == ["auto"]  # a change the kernel does not see keeps the resolution
    tnn.resolve_attention(cfg.replace(attention_impl="xla"), kinds=["causal"])
    assert calls == ["auto", "xla"]
    launch.clear_launch_cache()  # tables read again: a measurement may have changed the order
    assert tnn.resolve_attention(cfg, kinds=["causal"]).kernel("causal") is first
    assert calls == ["auto", "xla", "auto"]


def test_a_kind_that_was_not_resolved_is_refused_naming_the_fix():
    resolved = tnn.resolve_attention(gpt2_tiny())
    assert resolved.by_kind == (("causal", kernels.AttentionKernel.XLA),)
    with pytest.raises(ValueError, match="no 'cross' attention was resolved .only causal."):
        resolved.kernel("cross")


def test_only_auto_on_a_cuda_gpu_reads_the_launch_tables(tmp_path, monkeypatch):
    """As in tjx.kernels: a bad tables file is unread where no measurement is consulted."""
    bad = tmp_path / "tables.json"
    bad.write_text("{not json")
    monkeypatch.setenv(launch.ENV_VAR, str(bad))
    launch.clear_launch_cache()
    try:
        kernel = tnn.resolve_attention(gpt2_tiny()).kernel("causal")  # a CPU
        assert kernel is kernels.AttentionKernel.XLA
        with kernels.target("gpu", H100, (9, 0)), pytest.raises(ValueError, match="malformed"):
            tnn.resolve_attention(gpt2_tiny(precision="bf16"))
    finally:
        launch.clear_launch_cache()


def test_one_name_resolves_a_models_kernels_the_others_are_gone(h100):
    """`resolve_attention` is the one resolution: with an app's build it chooses the kernel that
    compiles and holds the kernels a model built from that choice runs (no second resolution);
    the names it replaced are gone from tjx.nn and tjx.kernels."""
    for old in ("choose_attention_kernel", "resolve_model_attention"):
        assert not hasattr(tnn, old), old
    for old in ("attention_call", "AttentionCall", "resolve_layer_kernel"):
        assert not hasattr(tnn.kernel_choice, old), old
    assert not hasattr(kernels, "choose_kernel")
    cfg = gpt2_tiny(precision="bf16")
    built: list[str] = []
    resolved = tnn.resolve_attention(cfg, build=built.append, say=lambda line: None)
    assert (resolved.name, resolved.fell_back, built) == ("cudnn", False, ["cudnn"])
    assert resolved.kernel("causal") is kernels.AttentionKernel.CUDNN
    assert tnn.resolve_attention(cfg).kernel("causal") is resolved.kernel("causal")


def test_a_model_given_its_resolved_kernels_resolves_nothing_and_another_configs_are_refused(
    h100, monkeypatch
):
    """``build_model(config, attention=...)``: the app's one resolution (with its compile) goes
    into the model's parts, which run it without resolving again; kernels resolved for another
    config (a fallback's, a changed precision) or another device are refused in one line."""
    from tjx.nn import stack as stack_module
    from tjx.nn.attention import layer as attention_module

    cfg = llama_tiny(
        num_layers=2, precision="bf16", attention=tnn.AttentionConfig(logit_softcap=30.0)
    )
    resolved = tnn.resolve_attention(cfg, build=lambda kernel: None, say=lambda line: None)
    assert resolved.serves(cfg) and resolved.kernel("causal") is kernels.AttentionKernel.XLA

    def again(*args, **kwargs):
        raise AssertionError("the model resolved its kernels again")

    monkeypatch.setattr(stack_module, "resolve_attention", again)
    monkeypatch.setattr(attention_module, "resolve_attention", again)
    model = nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0), attention=resolved))
    assert [k for _, _, k in _layer_kernels(model)] == [kernels.AttentionKernel.XLA] * 2

    # A fallback's kernels are those of the kernel that compiled: the config must name it.
    def no_cudnn(kernel: str) -> None:
        if kernel == "cudnn":
            raise RuntimeError("cuDNN failed to compile")

    plain = cfg.replace(**{"attention.logit_softcap": None})
    fell = tnn.resolve_attention(plain, build=no_cudnn, say=lambda line: None)
    assert (fell.name, fell.fell_back) == ("xla", True)
    assert fell.serves(plain.replace(attention_impl="xla")) and not fell.serves(plain)
    for other in (plain, cfg.replace(precision="fp32")):
        with pytest.raises(ValueError, match="resolved for another model config or device"):
            tnn.build_model(other, rngs=nnx.Rngs(0), attention=fell)
    with kernels.target("cpu"):  # the same config, another device
        assert not resolved.serves(cfg)
    assert not tnn.ModelAttention(resolved.by_kind).serves(cfg)  # asked for nothing
