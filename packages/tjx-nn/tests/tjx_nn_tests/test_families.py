"""A family is a folder (``tjx.nn.families.<name>``): each folder declares itself once and is
listed once, and the shared modules of tjx-nn do not name it (a new family touches at most four
modules outside its folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tjx.nn import families
from tjx.nn.families.registry import FAMILIES, family_of, fixed_fields, model_types
from tjx.nn.hf.plan import HF_MODEL_TYPES
from tjx.nn.hf.start import HF_LLAMA_FIXED

SRC = Path(families.__file__).parent.parent  # tjx/nn
FOLDERS = Path(families.__file__).parent
#: How the source names each family (its folder's name, or its name in prose).
NAMED = {"gemma4": r"gemma[ _]?4", "llama4": r"llama[ _]?4"}
NAMED["kimi_k25"] = r"kimi"
NAMED["qwen3_5_moe"] = r"qwen3[._]?5[ _-]?moe"
#: DeepSeek-V3.2 by its folder's name and its sparse attention's settings and indexer.
NAMED["deepseek_v32"] = r"deepseek_v32|index_topk|index_head_dim|lightning indexer"
NAMED["minimax_m2"] = r"minimax[ _-]?m2"
#: The most modules outside a family's folder that may name it: the registry, and the config
#: fields of its switches with their checks (``configs``, ``family_config``) and one hook.
MOST = 4


def test_each_family_folder_declares_itself_and_is_listed_once():
    folders = sorted(p.parent.name for p in FOLDERS.glob("*/family.py"))
    assert folders == sorted(f.name for f in FAMILIES) == sorted(NAMED)
    types = model_types()
    assert len(types) == len(set(types)), "two families read one model type"
    for family in FAMILIES:
        for model_type in family.model_types:
            assert family_of(model_type) is family
            assert HF_MODEL_TYPES[model_type] == "llama"
        assert set(family.fixed) <= set(HF_LLAMA_FIXED)
    assert family_of("llama") is None and family_of(None) is None
    assert set(fixed_fields()) <= set(HF_LLAMA_FIXED)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_a_family_is_named_by_at_most_four_modules_outside_its_folder(name):
    pattern = re.compile(NAMED[name], re.IGNORECASE)
    own = FOLDERS / name
    naming = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if own not in path.parents and pattern.search(path.read_text(encoding="utf-8"))
    )
    assert naming, f"the pattern finds no module naming {name}: the check would pass blindly"
    assert len(naming) <= MOST, f"{name} is named outside its folder by {naming}"
    # The loader, the exporter and the start's fixed settings look families up in the registry.
    assert not {"hf/checkpoints.py", "hf/plan.py", "hf/start.py", "hf/keys.py"} & set(naming)


#: The most lines a module of a family folder holds (issue #69: none of tjx-nn above 500).
MOST_LINES = 500


@pytest.mark.parametrize("name", sorted(NAMED))
def test_a_family_folder_keeps_each_module_at_most_500_lines(name):
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (FOLDERS / name).glob("*.py")
    }
    assert "hf.py" in sizes, f"no modules found in {FOLDERS / name}: the check would pass blindly"
    too_long = {module: n for module, n in sizes.items() if n > MOST_LINES}
    assert not too_long, f"{name}'s modules above {MOST_LINES} lines: {too_long}"


def test_no_module_of_tjx_nn_holds_more_than_500_lines():
    sizes = {
        str(path.relative_to(SRC)): len(path.read_text(encoding="utf-8").splitlines())
        for path in SRC.rglob("*.py")
    }
    assert len(sizes) > 100, f"only {len(sizes)} modules found under {SRC}: the check would pass"
    too_long = {module: n for module, n in sizes.items() if n > MOST_LINES}
    assert not too_long, f"tjx-nn's modules above {MOST_LINES} lines: {too_long}"
