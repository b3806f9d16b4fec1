"""A deviceless compile's findings kept on disk: a second compile of the same program on the same
target reads them back exactly; anything the compile reads (the program, its op names, the flags,
the target) that changes is a new entry; a refusal for memory is kept, another failure is not; a
broken or unwritable folder costs a compile, never a wrong answer."""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import CompileFindings, compile_lowered, peak_bytes, target_key
from tjx.metrics.compile_findings import CompiledText, MemoryStats


def lowered_of(n: int, name: str = "f"):
    """A small program over an ``n``-vector (a fresh shape per test: its own entry)."""

    def f(x):
        with jax.named_scope(name):
            return jnp.tanh(x) * 2.0

    return jax.jit(f).lower(jax.ShapeDtypeStruct((n,), jnp.float32))


def twice(n: int, findings: CompileFindings):
    """The same program compiled twice."""
    return [compile_lowered(lambda: lowered_of(n), "step", findings=findings) for _ in range(2)]


class Fake:
    """A lowered program whose compile fails with ``error`` (counted), for the failure rules."""

    def __init__(self, error: str, text: str = "module @fake {}"):
        self.error, self.text, self.compiles = error, text, 0

    def as_text(self, debug_info: bool = False) -> str:
        return self.text

    def compile(self, compiler_options=None):
        self.compiles += 1
        raise RuntimeError(self.error)


def test_a_program_compiled_before_is_read_back_with_the_same_text_and_memory(tmp_path):
    findings = CompileFindings(tmp_path / "kept", target_key("cpu-test"))
    n = int(np.random.default_rng().integers(100, 1000))
    first, again = twice(n, findings)
    assert not first.kept and again.kept and again.took.endswith(", compiled before")
    assert isinstance(again.compiled, CompiledText)
    assert again.compiled.as_text() == first.compiled.as_text()
    assert again.peak == first.peak == peak_bytes(first.compiled)["peak"]
    m = first.compiled.memory_analysis()
    assert again.compiled.memory_analysis().temp_size_in_bytes == m.temp_size_in_bytes
    assert len(list((tmp_path / "kept").glob("*.json.gz"))) == 1


def test_what_the_compile_reads_is_in_the_key(tmp_path, monkeypatch):
    findings = CompileFindings(tmp_path, target_key("cpu-test"))
    n = int(np.random.default_rng().integers(100, 1000))

    def key(size: int = n, name: str = "f", options=None, on=findings) -> str:
        return on.key(lowered_of(size, name), options)

    base = key()
    assert key() == base  # deterministic
    assert key(n + 1) != base  # the program
    assert key(name="g") != base  # its op names (in the HLO's metadata)
    assert key(options={"xla_gpu_enable_triton_gemm": False}) != base
    assert key(on=CompileFindings(tmp_path, target_key("other"))) != base
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=0")
    flagged = key()
    monkeypatch.setenv("LIBTPU_INIT_ARGS", "--xla_tpu_enable_latency_hiding_scheduler=true")
    assert len({base, flagged, key()}) == 3


def test_source_locations_are_not_in_the_key_but_op_names_are(tmp_path):
    findings = CompileFindings(tmp_path, "t")
    text = '#loc3 = loc("/tmp/clone-a/pkg/layer.py":12:3 to :30)\n#loc6 = loc("jit(f)/tanh"(#loc3))'

    def key(t: str) -> str:
        return findings.key(Fake("", t))

    assert key(text) == key(text.replace("/tmp/clone-a/pkg/layer.py", "/home/u/block.py"))
    assert key(text) == key(text.replace(":12:3 to :30", ":13:5"))
    assert key(text) != key(text.replace("jit(f)/tanh", "jit(f)/exp"))
    assert key(text) != key(text.replace("#loc3))", "#loc4))"))


def test_a_refusal_for_memory_is_kept_and_another_failure_is_compiled_again(tmp_path):
    findings = CompileFindings(tmp_path, "t")
    refused = Fake("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm", "module @a {}")
    first = compile_lowered(lambda: refused, "step", findings=findings)
    again = compile_lowered(lambda: refused, "step", findings=findings)
    assert first.out_of_memory and again.out_of_memory and again.kept
    assert again.error == first.error and refused.compiles == 1
    crashed = Fake("INTERNAL: ptxas exited with non-zero error code", "module @b {}")
    for _ in range(2):
        one = compile_lowered(lambda: crashed, "step", findings=findings)
        assert one.error.startswith("INTERNAL") and not one.kept
    assert crashed.compiles == 2


def test_a_broken_entry_is_compiled_again_and_written_anew(tmp_path):
    findings = CompileFindings(tmp_path, "t")
    n = int(np.random.default_rng().integers(100, 1000))
    first, _ = twice(n, findings)
    (entry,) = tmp_path.glob("*.json.gz")
    entry.write_bytes(gzip.compress(b'{"format": 1, "text": '))  # torn
    again, third = twice(n, findings)
    assert not again.kept and again.peak == first.peak and third.kept


def test_an_unwritable_folder_keeps_nothing_and_the_plan_is_the_same(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    findings = CompileFindings(blocked / "deviceless", "t")
    n = int(np.random.default_rng().integers(100, 1000))
    one, two = twice(n, findings)
    assert one.error is None and not two.kept and two.peak == one.peak


def test_compiled_text_answers_as_the_compiled_program():
    memory = MemoryStats(1, 2, 3, 1, 0)
    kept = CompiledText("HloModule m", memory)
    assert kept.as_text() == "HloModule m"
    assert peak_bytes(kept)["peak"] == 1 + 2 + 3 - 1


@pytest.mark.parametrize("parts", [("h100", "1x1x1"), ("h100", "1x1x2"), ("a100-40gb", "1x1x1")])
def test_each_target_has_its_own_key(parts):
    others = {("h100", "1x1x1"), ("h100", "1x1x2"), ("a100-40gb", "1x1x1")} - {parts}
    assert all(target_key(*parts) != target_key(*o) for o in others)
