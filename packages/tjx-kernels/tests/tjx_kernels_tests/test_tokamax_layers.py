"""``norm.impl`` / ``mlp.impl: tokamax`` (tokamax's norm and gated linear unit, #68).

tokamax's GPU kernels cannot run on a CPU (the Triton norm, the Mosaic GPU unit): tjx's wrappers
(`tokamax_norm`, `tokamax_glu`) are checked through **tokamax's own XLA implementation** (the
same public call with ``implementation="xla"``) in float64 against NumPy, forward and
gradients (1e-12). The rule (where the names are refused, that ``auto`` needs a measurement)
needs no tokamax. tokamax comes from a scratch folder (tests-support's `tjx_tokamax_env`).
"""

from __future__ import annotations

import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import choice, layer_kernels, tokamax_ops
from tjx.kernels.layer_kernels import layer_auto, resolve_glu, resolve_norm

from ._ref import measured_table, rel_err

H100 = choice.Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
H200 = choice.Target("gpu", "NVIDIA H200", (9, 0))
A100 = choice.Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))
T4 = choice.Target("gpu", "Tesla T4", (7, 5))
CPU = choice.Target("cpu")
GLU = dict(activation="silu", bias=False, d_model=128, mlp_dim=256)


@pytest.fixture(scope="module")
def tokamax():
    from tjx_tokamax_env import on_path

    on_path()
    return tokamax_ops.load()


@pytest.fixture
def has_tokamax(monkeypatch):
    monkeypatch.setattr(layer_kernels, "installed", lambda: True)
    monkeypatch.setattr(layer_kernels, "jax_builds_tokamax_glu", lambda: True)


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,dtype,wanted",
    [
        (CPU, jnp.bfloat16, "this run's device is cpu"),
        (T4, jnp.bfloat16, "needs a CUDA GPU of sm80 or later; this run's device is Tesla T4"),
        (A100, jnp.float64, "compute dtype float64 is not supported"),
    ],
)
def test_naming_the_tokamax_norm_where_it_cannot_run_is_one_line(
    target, dtype, wanted, has_tokamax
):
    with pytest.raises(ValueError) as err:
        resolve_norm("tokamax", dtype, target=target)
    assert wanted in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "target,dtype,change,wanted",
    [
        (A100, jnp.bfloat16, {}, "needs an sm90 or sm100 GPU"),
        (H100, jnp.bfloat16, {"activation": None}, "serves mlp.activation swiglu and geglu"),
        (H100, jnp.bfloat16, {"bias": True}, "has no biases; set use_bias false"),
        (H100, jnp.float32, {}, "compute dtype float32 is not supported"),
        (H100, jnp.bfloat16, {"mlp_dim": 200}, "mlp.dim (200) must be multiples of 64"),
    ],
)
def test_naming_the_tokamax_glu_where_it_cannot_run_is_one_line(
    target, dtype, change, wanted, has_tokamax
):
    with pytest.raises(ValueError) as err:
        resolve_glu("tokamax", dtype, target=target, **{**GLU, **change})
    assert wanted in str(err.value) and "\n" not in str(err.value)


def test_on_a_jax_without_the_glus_transform_naming_the_glu_is_one_line(has_tokamax, monkeypatch):
    """tokamax 0.0.12's unit needs ``plgpu.TransposeTransform`` (failed on an H200, jax 0.11.2)."""
    monkeypatch.setattr(layer_kernels, "jax_builds_tokamax_glu", lambda: False)
    with pytest.raises(ValueError) as err:
        resolve_glu("tokamax", jnp.bfloat16, target=H200, **GLU)
    said = str(err.value)
    assert said == (
        "mlp.impl 'tokamax': tokamax 0.0.12's gated linear unit is built with jax's "
        f"plgpu.TransposeTransform, which jax {jax.__version__} does not have (the kernel cannot "
        "compile); use 'auto' or 'xla'"
    )
    assert resolve_norm("tokamax", jnp.bfloat16, target=H200) == "tokamax"  # the norm is Triton's
    assert resolve_glu("auto", jnp.bfloat16, target=H200, **GLU) == "xla"


@pytest.mark.parametrize("module,builds", [("with", True), ("without", False), ("none", False)])
def test_whether_jax_builds_the_glu_is_read_off_its_mosaic_gpu_module(module, builds, monkeypatch):
    real = layer_kernels.importlib.import_module

    def fake(name):
        assert name == "jax.experimental.pallas.mosaic_gpu"
        if module == "none":
            raise ImportError("no Mosaic GPU Pallas in this jax")
        return types.SimpleNamespace(**({"TransposeTransform": object} if module == "with" else {}))

    monkeypatch.setattr(layer_kernels.importlib, "import_module", fake)
    assert layer_kernels.jax_builds_tokamax_glu() is builds
    monkeypatch.setattr(layer_kernels.importlib, "import_module", real)
    plgpu = real("jax.experimental.pallas.mosaic_gpu")
    assert layer_kernels.jax_builds_tokamax_glu() is hasattr(plgpu, "TransposeTransform")


def test_without_the_package_naming_tokamax_says_what_to_install(monkeypatch):
    monkeypatch.setattr(layer_kernels, "installed", lambda: False)
    monkeypatch.setattr(layer_kernels, "jax_builds_tokamax_glu", lambda: True)
    with pytest.raises(ValueError, match=r"^mlp\.impl 'tokamax' needs the tokamax package: pip "
                       r"install 'tjx-kernels\[gpu\]' \(tokamax==0\.0\.12\)$"):  # fmt: skip
        resolve_glu("tokamax", jnp.bfloat16, target=H100, **GLU)
    with pytest.raises(ValueError, match=r"^norm\.impl 'tokamax' needs the tokamax package"):
        resolve_norm("tokamax", jnp.bfloat16, target=H100)


def test_where_tokamax_can_run_the_names_resolve_to_themselves(has_tokamax):
    assert resolve_norm("tokamax", jnp.float32, target=A100) == "tokamax"
    assert resolve_glu("tokamax", jnp.bfloat16, target=H100, **GLU) == "tokamax"
    assert resolve_glu("xla", jnp.float32, target=CPU, **{**GLU, "bias": True}) == "xla"
    with pytest.raises(ValueError, match=r"^norm\.impl must be one of auto, xla, tokamax"):
        resolve_norm("triton", jnp.bfloat16, target=H100)


@pytest.mark.parametrize("target", [CPU, A100, H100, H200])
def test_auto_is_xla_everywhere_with_the_packaged_launch_tables(target, has_tokamax):
    """Nothing measured tokamax's norm or unit yet (launch_tables.json): auto never takes them."""
    assert resolve_norm("auto", jnp.bfloat16, target=target) == "xla"
    assert resolve_glu("auto", jnp.bfloat16, target=target, **GLU) == "xla"
    assert "no tjx measurement" in layer_auto("glu", jnp.bfloat16, target).reason or not target.cuda


def test_auto_takes_tokamax_only_where_it_was_measured_faster(monkeypatch, tmp_path, has_tokamax):
    measured_table(monkeypatch, tmp_path, {"norm-bf16": {"tokamax": 0.5, "xla": 0.8},
                                           "glu-bf16": {"tokamax": 2.0, "xla": 1.5}})  # fmt: skip
    assert resolve_norm("auto", jnp.bfloat16, target=H100) == "tokamax"
    assert layer_auto("norm", jnp.bfloat16, H100).reason == (
        "fastest measured on NVIDIA H100 80GB HBM3 for norm-bf16: tokamax 0.5 ms, xla 0.8 ms"
    )
    assert resolve_glu("auto", jnp.bfloat16, target=H100, **GLU) == "xla"  # measured slower
    assert resolve_norm("auto", jnp.float16, target=H100) == "xla"  # another bucket
    assert resolve_norm("auto", jnp.bfloat16, target=H200) == "xla"  # another device kind
    # measured faster, but this model is one the kernel cannot serve: XLA, no refusal
    assert resolve_glu("auto", jnp.bfloat16, target=H100, **{**GLU, "bias": True}) == "xla"
    measured_table(monkeypatch, tmp_path, {"glu-bf16": {"tokamax": 1.0}})  # no XLA timing
    assert resolve_glu("auto", jnp.bfloat16, target=H100, **GLU) == "xla"


def test_a_launch_table_bucket_must_name_a_known_layer(tmp_path):
    from tjx.kernels import launch

    path = tmp_path / "t.json"
    path.write_text('{"schema": 1, "devices": {"X": {"source": "s", "entries": {}, '
                    '"timings": {"mlp-bf16": {"xla": 1.0}}}}}')  # fmt: skip
    with pytest.raises(ValueError, match=re.escape("'<norm|glu>-<bf16|fp16|fp32>' (the norms")):
        launch.load_launch_tables(path)


# -- the wrappers, through tokamax's XLA path, against float64 NumPy --------------------------


def _np_norm(x, scale, bias, eps, rms):
    x = np.asarray(x, np.float64)
    c = x if rms else x - x.mean(-1, keepdims=True)
    y = c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * np.asarray(scale, np.float64)
    return y if bias is None else y + np.asarray(bias, np.float64)


@pytest.mark.parametrize("rms,with_bias", [(False, True), (False, False), (True, False)])
def test_the_norm_wrapper_matches_float64_through_tokamax_xla(rms, with_bias, tokamax):
    rng = np.random.default_rng(3 + rms + 2 * with_bias)
    x, dy = rng.normal(size=(2, 5, 48)) * 3 + 1, rng.normal(size=(2, 5, 48))
    scale, bias = 1 + 0.1 * rng.normal(size=48), rng.normal(size=48) if with_bias else None
    with jax.enable_x64(True):

        def f(x, s, b):
            return tokamax_ops.tokamax_norm(
                x, s, b, eps=1e-5, rms=rms, out_dtype=jnp.float64, implementation="xla"
            )

        args = (jnp.asarray(x), jnp.asarray(scale), None if bias is None else jnp.asarray(bias))
        out, vjp = jax.vjp(f, *args)
        grads = vjp(jnp.asarray(dy))
        want = _np_norm(x, scale, bias, 1e-5, rms)
        # the reference's gradients: autodiff of the same formula in float64 (jnp, not tokamax)
        ref_grads = jax.vjp(lambda x, s, b: jnp.asarray(_jnp_norm(x, s, b, 1e-5, rms)), *args)[1](
            jnp.asarray(dy)
        )
    assert out.dtype == jnp.float64 and rel_err(out, want) <= 1e-12
    for g, w in zip(grads, ref_grads, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            assert rel_err(g, w) <= 1e-12


def _jnp_norm(x, scale, bias, eps, rms):
    c = x if rms else x - x.mean(-1, keepdims=True)
    y = c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + eps) * scale
    return y if bias is None else y + bias


def test_the_norm_wrapper_returns_the_compute_dtype(tokamax):
    x = jnp.ones((3, 64), jnp.float32)
    out = tokamax_ops.tokamax_norm(x, jnp.ones(64), None, eps=1e-6, rms=True,
                                   out_dtype=jnp.bfloat16, implementation="xla")  # fmt: skip
    assert out.dtype == jnp.bfloat16 and out.shape == (3, 64)


def _np_glu(x, wg, wu, name):
    x, wg, wu = (np.asarray(a, np.float64) for a in (x, wg, wu))
    g, u = x @ wg, x @ wu
    if name == "silu":
        act = g / (1 + np.exp(-g))
    else:
        act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))
    return act * u


@pytest.mark.parametrize("name,lead", [("silu", (2, 7)), ("gelu", (3, 128)), ("silu", (1,))])
def test_the_glu_wrapper_matches_float64_through_tokamax_xla(name, lead, tokamax):
    """Rows not a multiple of the kernel's 128 (a decoding step's) are padded and cut again."""
    rng = np.random.default_rng(len(lead) + len(name))
    x = rng.normal(size=(*lead, 32))
    wg, wu = rng.normal(size=(2, 32, 48)) / 6
    with jax.enable_x64(True):
        out = tokamax_ops.tokamax_glu(jnp.asarray(x), (jnp.asarray(wg), jnp.asarray(wu)),
                                      activation=name, implementation="xla")  # fmt: skip
    assert out.shape == (*lead, 48) and out.dtype == jnp.float64
    assert rel_err(out, _np_glu(x, wg, wu, name)) <= 1e-12


def test_the_glu_wrapper_keeps_the_compute_dtype_and_refuses_other_units(tokamax):
    x = jnp.ones((4, 64), jnp.bfloat16)
    w = jnp.ones((64, 64), jnp.bfloat16) / 64
    out = tokamax_ops.tokamax_glu(x, (w, w), activation="gelu", implementation="xla")
    assert out.dtype == jnp.bfloat16 and out.shape == (4, 64)
    with pytest.raises(ValueError, match=r"^tokamax_glu: activation must be one of"):
        tokamax_ops.tokamax_glu(x, (w, w), activation="relu", implementation="xla")


def test_the_kernels_called_are_tokamaxs_triton_norm_and_mosaic_glu(tokamax, monkeypatch):
    seen = {}

    def record(name):
        def call(x, *args, **kw):
            seen[name] = kw["implementation"]
            return jnp.zeros(
                x.shape[:-1] + (args[0][0].shape[-1] if name == "glu" else x.shape[-1],)
            )

        return call

    monkeypatch.setattr(tokamax, "layer_norm", record("norm"))
    monkeypatch.setattr(tokamax, "gated_linear_unit", record("glu"))
    x = jnp.ones((2, 64), jnp.bfloat16)
    tokamax_ops.tokamax_norm(x, jnp.ones(64), None, eps=1e-6, rms=True, out_dtype=x.dtype)
    tokamax_ops.tokamax_glu(x, (jnp.ones((64, 64)),) * 2, activation="silu")
    assert seen == {"norm": "triton", "glu": "mosaic"}
    assert "triton" in tokamax._src.ops.normalization.api.IMPLEMENTATIONS
    assert "mosaic" in tokamax._src.ops.gated_linear_unit.api.IMPLEMENTATIONS


def test_cross_lowering_answers_the_host_devices_capability_with_the_targets(tokamax):
    """The unit's ``supported_on`` asks about the device its arguments live on (the CPU here):
    inside a ``target`` block naming an sm90 GPU it is answered with the target's."""
    gpu_utils = sys.modules["tokamax._src.gpu_utils"]
    cpu = jax.devices("cpu")[0]
    with choice.target(H100.platform, H100.device_kind, H100.compute_capability):
        tokamax_ops.cross_lowering_hooks()
        assert gpu_utils.is_sm90(cpu) and gpu_utils.is_sm90()
    assert not gpu_utils.is_sm90(cpu)
