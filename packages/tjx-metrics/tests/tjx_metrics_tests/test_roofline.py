"""The per-kernel roofline over real optimized HLO (compiled deviceless for an H100 and a TPU v5e).

The programs and their sizes are tools/hlo_fixtures.py's (copied here as constants): every FLOP
and byte expected below is counted by hand from them, independently of the HLO.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tjx.metrics import CustomCall, accelerator, parse_hlo, roofline

TEXTS = Path(__file__).parent / "hlo_texts"
LAYERS, WIDTH, ROWS = 6, 256, 8
VOCAB, TOKENS = 1024, 8
BATCH, SEQ, HEADS, HEAD_DIM = 2, 128, 4, 64
DEVICES, CHUNK = 8, 4096
PALLAS_ROWS = 32
BF16 = 2


def read(name: str) -> str:
    return (TEXTS / name).read_text()


@pytest.mark.parametrize("name,device", [("h100_scan.hlo", "h100"), ("v5e_scan.hlo", "v5e")])
def test_a_scanned_stack_counts_its_matmuls_once_per_layer(name: str, device: str):
    est = roofline(read(name), accelerator(device))
    # Forward h @ W_i, backward dh @ W_iᵀ and hᵀ @ dh: three [ROWS, WIDTH] x [WIDTH, WIDTH]
    # products per layer. A TPU states no trip count: it is read from the loop's condition.
    assert est.flops == 3 * LAYERS * 2 * ROWS * WIDTH * WIDTH
    assert est.notes == ()
    matmuls = [k for k in est.kernels if k.kind == "matmul"]
    assert matmuls and all(k.count == LAYERS for k in matmuls)


def test_a_trip_count_the_compiler_leaves_implicit_is_read_from_the_loop():
    text = re.sub(r'"known_trip_count":\{"n":"\d+"\},', "", read("h100_scan.hlo"))
    assert "known_trip_count" not in text
    est = roofline(text, accelerator("h100"))
    assert est.flops == 3 * LAYERS * 2 * ROWS * WIDTH * WIDTH and est.notes == ()


def test_a_loop_whose_trip_count_cannot_be_read_is_counted_once_and_said():
    text = re.sub(r'"known_trip_count":\{"n":"\d+"\},', "", read("h100_scan.hlo"))
    text = text.replace("constant(6)", "constant(-6)").replace("direction=LT", "direction=GT")
    est = roofline(text, accelerator("h100"))
    assert est.flops == 3 * 2 * ROWS * WIDTH * WIDTH  # each loop body once
    assert len(est.notes) == 2 and all("no known trip count" in n for n in est.notes)


def test_a_kernel_that_slices_one_layer_reads_that_layer_not_the_stack():
    est = roofline(read("h100_scan.hlo"), accelerator("h100"))
    layer, stack = WIDTH * WIDTH * BF16, LAYERS * WIDTH * WIDTH * BF16
    in_loop = [k for k in est.kernels if k.count == LAYERS]
    assert max(k.bytes_read for k in in_loop) < 2 * layer < stack
    # The weight slices: one layer's weights per iteration, in both loops.
    sliced = [k for k in in_loop if "dynamic_slice" in k.name and k.bytes_read >= layer]
    assert len(sliced) == 2 and all(k.bytes_read == layer + 4 for k in sliced)  # + the index


def test_an_in_place_update_writes_the_update_not_the_buffer():
    est = roofline(read("h100_scan.hlo"), accelerator("h100"))
    updates = [k for k in est.kernels if "dynamic_update_slice" in k.name]
    assert updates
    # Each writes one layer's slice into a stacked [LAYERS, ...] buffer.
    activations, grads = ROWS * WIDTH * BF16, WIDTH * WIDTH * BF16
    assert {k.bytes_written for k in updates} <= {activations, grads}
    [scatter] = [k for k in est.kernels if "scatter" in k.name]
    assert scatter.bytes_written == TOKENS * WIDTH * BF16  # the gradient rows, not the table


def test_a_gather_reads_the_rows_it_takes():
    est = roofline(read("h100_scan.hlo"), accelerator("h100"))
    [gather] = [k for k in est.kernels if "gather" in k.name]
    assert gather.bytes_read == TOKENS * WIDTH * BF16 + TOKENS * 4  # rows + their indices
    assert gather.bytes_read < VOCAB * WIDTH * BF16


def test_each_kernel_takes_the_slower_of_its_two_roofs():
    h100 = accelerator("h100")
    est = roofline(read("h100_scan.hlo"), h100)
    for k in est.kernels:
        compute = sum(k.flops.values()) / h100.peak.bf16
        memory = (k.bytes_read + k.bytes_written) / h100.hbm_bandwidth
        assert k.seconds == pytest.approx(max(compute, memory), rel=1e-12)
    assert est.seconds == pytest.approx(sum(k.seconds * k.count for k in est.kernels))
    assert est.bytes == pytest.approx(sum(k.total_bytes for k in est.kernels))
    assert sum(v["count"] for v in est.by_kind().values()) == est.launches
    assert est.top(3)[0].total_seconds == max(k.total_seconds for k in est.kernels)


def test_cudnn_attention_counts_what_it_computes_halved_when_causal():
    est = roofline(read("h100_attention.hlo"), accelerator("h100"))
    attention = {k.detail: k for k in est.kernels if k.kind == "attention"}
    square = BATCH * HEADS * SEQ * SEQ * HEAD_DIM
    fwd, bwd = attention["__cudnn$fmhaSoftmax"], attention["__cudnn$fmhaSoftmaxBackward"]
    assert fwd.flops == {"bf16": 2 * 2 * square / 2}  # QKᵀ and PV; causal skips half
    assert bwd.flops == {"bf16": 5 * 2 * square / 2}  # QKᵀ again, dV, dP, dQ, dK
    qkv = BATCH * SEQ * HEADS * HEAD_DIM * BF16
    assert fwd.bytes_read == 3 * qkv
    assert fwd.bytes_written == qkv + BATCH * HEADS * SEQ * 4  # output + float32 row statistics


def test_collectives_are_timed_on_the_links_at_ring_traffic():
    h100 = accelerator("h100")
    est = roofline(read("h100x8_collectives.hlo"), h100)
    size = CHUNK * 4
    share = (DEVICES - 1) / DEVICES
    wire = {k.detail: k.wire_bytes for k in est.collectives}
    assert wire == {
        f"all-reduce over {DEVICES}": 2 * share * size,
        f"all-gather over {DEVICES}": share * size * DEVICES,
        f"reduce-scatter over {DEVICES}": share * size,
        f"collective-permute over {DEVICES}": size,
    }
    for k in est.collectives:
        memory = (k.bytes_read + k.bytes_written) / h100.hbm_bandwidth
        assert k.seconds == pytest.approx(max(k.wire_bytes / h100.link_bandwidth, memory))


def test_a_callers_kernel_is_priced_by_its_cost_function_else_flagged():
    text, h100 = read("h100_pallas.hlo"), accelerator("h100")
    plain = roofline(text, h100)
    [kernel] = [k for k in plain.kernels if k.kind == "custom call"]
    tile = PALLAS_ROWS * 128 * 4
    assert not kernel.priced and kernel.detail == "tiny_add"
    assert (kernel.bytes_read, kernel.bytes_written) == (2 * tile, tile)
    assert any("tiny_add" in note for note in plain.notes)
    seen: list[CustomCall] = []

    def cost(call: CustomCall) -> tuple[dict[str, float], float, float]:
        seen.append(call)
        return {"f32": 1e9}, 3.0 * tile, 1.0 * tile

    priced = roofline(text, h100, custom_call_cost=cost)
    [call] = seen
    assert (call.kernel, call.grid) == ("tiny_add", (PALLAS_ROWS // 8, 1, 1))
    assert [a.dims for a in call.operands] == [(PALLAS_ROWS, 128)] * 2
    [kernel] = [k for k in priced.kernels if k.detail == "tiny_add"]
    assert kernel.priced and kernel.bytes_read == 3 * tile and priced.notes == ()
    assert kernel.seconds == pytest.approx(max(1e9 / h100.peak.tf32, 4 * tile / h100.hbm_bandwidth))


def test_estimated_mfu_is_model_flops_over_time_at_the_bf16_peak():
    est = roofline(read("h100_scan.hlo"), accelerator("h100"))
    assert est.mfu(1e9, devices=2) == pytest.approx(1e9 / (est.seconds * 989.5e12 * 2))


def test_the_parser_reads_shapes_layouts_and_attributes():
    module = parse_hlo(read("v5e_scan.hlo"))
    assert module.entry in module.computations
    spaces = {a.memory_space for c in module.computations.values() for i in c.instructions
              for a in i.shape}  # fmt: skip
    assert {0, 1} <= spaces  # HBM and a TPU's VMEM (S(1))
    whiles = [i for i in module.entry_computation.instructions if i.opcode == "while"]
    assert len(whiles) == 2 and all(w.called("body") in module.computations for w in whiles)
    gpu = parse_hlo(read("h100x8_collectives.hlo"))
    assert gpu.num_partitions == DEVICES
    with pytest.raises(ValueError, match="no 'HloModule' line"):
        parse_hlo("ENTRY %main () -> f32[] {\n}\n")


def test_a_tpu_head_batched_projection_counts_the_taps_inside_its_padding():
    """A TPU writes ``bsd,dhk->bshk`` (a [16·1024, 768] × [768, 12·64] projection) as a
    convolution whose 1×12 window slides over 11 columns of padding on each side of a size-1
    input: one tap per output is real (the line is libtpu's, gpt2_small's query projection)."""
    conv = (
        "  ROOT %c = bf16[16,1024,12,64]{1,3,2,0} convolution(%a, %b), "
        "window={size=1x12 pad=0_0x11_11 rhs_reversal=0x1}, dim_labels=0bf1_i1o0->0b1f"
    )
    text = "\n".join([
        "HloModule m",
        "ENTRY %main (a: bf16[16,1024,768,1], b: bf16[768,12,64,1]) -> bf16[16,1024,12,64] {",
        "  %a = bf16[16,1024,768,1]{1,2,3,0} parameter(0)",
        "  %b = bf16[768,12,64,1]{0,2,1,3} parameter(1)",
        conv,
        "}",
    ])  # fmt: skip
    est = roofline(text, accelerator("v5e"))
    assert est.flops == 2 * (16 * 1024) * 768 * (12 * 64)  # not 12× that (every tap)


def _conditional(marked: str | None) -> str:
    """A program whose conditional has a cheap branch (one exp) and a dear one (three)."""
    meta = lambda b: (
        f', metadata={{op_name="jit(f)/cond/branch_{b}_fun/{marked}/exp"}}'
        if marked is not None and b == 0
        else f', metadata={{op_name="jit(f)/cond/branch_{b}_fun/exp"}}'
    )
    return f"""HloModule m

%cheap (a: f32[1048576]) -> f32[1048576] {{
  %a = f32[1048576]{{0}} parameter(0)
  ROOT %e0 = f32[1048576]{{0}} exponential(%a){meta(0)}
}}

%dear (b: f32[1048576]) -> f32[1048576] {{
  %b = f32[1048576]{{0}} parameter(0)
  %e1 = f32[1048576]{{0}} exponential(%b){meta(1)}
  %e2 = f32[1048576]{{0}} exponential(%e1){meta(1)}
  ROOT %e3 = f32[1048576]{{0}} exponential(%e2){meta(1)}
}}

ENTRY %main (i: s32[], x: f32[1048576]) -> f32[1048576] {{
  %i = s32[] parameter(0)
  %x = f32[1048576]{{0}} parameter(1)
  ROOT %c = f32[1048576]{{0}} conditional(%i, %x, %x), branch_computations={{%cheap, %dear}}
}}
"""


def test_a_conditional_counts_its_dearest_branch_unless_one_is_marked_likely():
    h100 = accelerator("h100")
    one = 2 * 4 * 2**20  # one exp: reads and writes 4 MiB
    worst = roofline(_conditional(None), h100)
    assert worst.bytes == 3 * one and "most expensive branch" in worst.notes[0]
    likely = roofline(_conditional("likely_branch"), h100)
    assert likely.bytes == one
    (note,) = likely.notes
    saved = 2 * one / h100.hbm_bandwidth * 1e3
    assert note.startswith("1 conditional(s) counted as their branch marked 'likely_branch'")
    assert f"would add {saved:.2f} ms" in note
    assert roofline(_conditional("some_other_scope"), h100).bytes == 3 * one  # only the marker


def test_a_kernel_without_a_triton_name_is_priced_and_named_by_its_cost_function():
    """#68 (h100_mosaic.hlo: tokamax's Mosaic GPU attention as compiled for an H100 on
    2026-11-28, cut to one call without its MLIR module): the op name reaches the cost
    function (unescaped), whose fourth element names the kernel; a name that says attention
    prices it as attention. Without a cost: its operands and results, flagged (never free)."""
    h100, text = accelerator("h100"), read("h100_mosaic.hlo")
    plain = roofline(text, h100)
    [kernel] = [k for k in plain.kernels if k.detail == "mosaic_gpu_v2"]
    qkv = BATCH * 256 * HEADS * HEAD_DIM * BF16
    assert not kernel.priced
    assert (kernel.bytes_read, kernel.bytes_written) == (3 * qkv, qkv + 2 * 8192)  # + residuals
    assert any("mosaic_gpu_v2" in note for note in plain.notes)
    seen: list[CustomCall] = []

    def cost(call: CustomCall):
        seen.append(call)
        return {"bf16": 1e12}, 1.0, 2.0, "a library's flash attention fwd"

    priced = roofline(text, h100, custom_call_cost=cost)
    [call] = seen
    assert call.kernel is None and call.target == "mosaic_gpu_v2"
    said = 'jit(f)/tokamax:{"op":{"__type":"a.Kernel"},"mask":{"is_causal":true}}/mpmd_map'
    assert call.op_name == said
    [kernel] = priced.kernels
    assert (kernel.kind, kernel.detail) == ("attention", "a library's flash attention fwd")
    assert kernel.priced and priced.notes == ()
    assert kernel.seconds == pytest.approx(1e12 / h100.peak.bf16)
