"""What every integration test shares: a test checked against a peer (transformers, PEFT, TRL in
the scratch venv, `_hf_peer.run_peer`) records the peers' pinned versions in its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
import tjx_peers

from tests_integration._hf_peer import run_peer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    """A peer test's report names the versions it was checked against: a JUnit property
    ``peers`` (CI's report) and, when it fails, a ``peers`` section beside its output."""
    outcome = yield
    module = getattr(item, "module", None)
    if getattr(module, "run_peer", None) is not run_peer:
        return
    versions = tjx_peers.versions_line()
    report = outcome.get_result()
    if call.when == "call":
        item.user_properties.append(("peers", versions))
    if report.failed:
        report.sections.append(("peers", versions))
