"""The one module of tjx-kernels that uses a private jax API (jax 0.10.2).

cuDNN's packed ("ragged") attention layout — segments given as start offsets and lengths, no
``[b, 1, s, s]`` mask — is reachable only through ``jax._src.cudnn.fused_attention_stablehlo``:
the public ``jax.nn.dot_product_attention`` takes per-row lengths but no offsets. Everything tjx
needs from that module is named here, and ``test_cudnn_segments.py`` names each symbol, so a jax
upgrade that moves one fails that test first.

jax checks the GPU generation while tracing (packed needs Hopper, sm_90) by asking the *default
backend's* first device. When a step is cross-lowered for an abstract GPU on a CPU machine (the
deviceless plan, ``tjx.kernels.target``) there is no such device; `install_capability_hook`
makes that check answer from the current :class:`tjx.kernels.choice.Target` instead.
"""

from __future__ import annotations

import jax

from tjx.kernels.choice import Target, current_target

Array = jax.Array


def _module():  # type: ignore[no-untyped-def]
    from jax._src.cudnn import fused_attention_stablehlo  # the packed layout's only home

    return fused_attention_stablehlo


#: The private symbols used (``test_cudnn_segments`` checks each still exists).
SYMBOLS = ("dot_product_attention", "MaskType", "check_compute_capability")


def install_capability_hook() -> None:
    """Make jax's GPU-generation check answer from tjx's target while cross-lowering.

    Installed once, on the first packed call. With a GPU backend, or with no ``target(...)``
    block naming a GPU, the check is jax's own; only a CPU process lowering for an abstract GPU
    gets the target's compute capability (jax would ask a device that does not exist). The
    check runs when the custom_vjp's forward rule is traced, which can be after
    `packed_attention` returns (e.g. under ``jax.grad`` of a scan), hence a hook rather than a
    context around the call.
    """
    fa = _module()
    if getattr(fa.check_compute_capability, "_tjx_hook", False):
        return
    real = fa.check_compute_capability

    def check(capability: str) -> bool:
        t = current_target()
        if jax.default_backend() == "gpu" or not t.cuda or t.compute_capability is None:
            return bool(real(capability))
        return t.compute_capability >= tuple(int(x) for x in capability.split("."))

    check._tjx_hook = True  # type: ignore[attr-defined]
    fa.check_compute_capability = check


def packed_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    lengths: Array,
    offsets: Array,
    causal: bool,
    scale: float,
    target: Target,
    window: int | None = None,
) -> Array:
    """cuDNN attention over packed segments: ``offsets`` [b, M+1] (segment starts, -1 padded)
    and ``lengths`` [b, M] (-1 padded), the same for queries and keys; causal within a segment.
    ``window`` (causal only): a query sees its ``window`` latest keys, itself included.

    Tokens outside every segment get unspecified outputs and gradients (the caller masks them).
    """
    fa = _module()
    mask = fa.MaskType.PADDING_CAUSAL if causal else fa.MaskType.PADDING
    del target  # the hook reads the current target when jax checks (see above)
    install_capability_hook()
    return fa.dot_product_attention(  # type: ignore[no-any-return]
        q,
        k,
        v,
        q_seqlen=lengths,
        kv_seqlen=lengths,
        q_offsets=offsets,
        kv_offsets=offsets,
        scale=scale,
        mask_type=mask,
        sliding_window_length=window,
    )
