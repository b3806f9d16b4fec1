"""Pants plugin: a package's wheel version is its `__version__`, the one source of truth.

Each `python_distribution` in `packages/tjx-<name>/BUILD` leaves `version` out of its
`python_artifact`; this plugin reads `__version__ = "X.Y.Z"` from
`packages/tjx-<name>/src/tjx/<name>/version.py` when the package has one (a package whose own
modules need the version keeps it there, out of an import circle with `__init__`), else from its
`__init__.py`, and fills it in, so `tools/release` edits one line.
"""

from __future__ import annotations

import re

from pants.backend.python.util_rules.package_dists import SetupKwargs, SetupKwargsRequest
from pants.engine.fs import DigestContents, GlobMatchErrorBehavior, PathGlobs
from pants.engine.rules import Get, collect_rules, rule
from pants.engine.target import Target
from pants.engine.unions import UnionRule

VERSION_LINE = re.compile(r'^__version__\s*=\s*["\']([^"\']+)["\']', re.M)


class TjxSetupKwargsRequest(SetupKwargsRequest):
    @classmethod
    def is_applicable(cls, target: Target) -> bool:
        return target.address.spec_path.startswith("packages/tjx-")


@rule
async def tjx_setup_kwargs(request: TjxSetupKwargsRequest) -> SetupKwargs:
    spec_path = request.target.address.spec_path
    name = spec_path.rsplit("/", 1)[-1].removeprefix("tjx-")
    candidates = [f"{spec_path}/src/tjx/{name}/{module}.py" for module in ("version", "__init__")]
    contents = await Get(
        DigestContents,
        PathGlobs(
            candidates,
            glob_match_error_behavior=GlobMatchErrorBehavior.ignore,  # either file may be absent
        ),
    )
    by_path = {entry.path: entry.content.decode() for entry in contents}
    init_path = next((path for path in candidates if path in by_path), candidates[-1])
    match = VERSION_LINE.search(by_path.get(init_path, ""))
    if match is None:
        raise ValueError(f"{init_path} has no `__version__ = \"X.Y.Z\"` line")
    kwargs = dict(request.explicit_kwargs)
    if "version" in kwargs:
        raise ValueError(
            f"{request.target.address}: remove `version` from python_artifact; "
            f"the version comes from {init_path}"
        )
    kwargs["version"] = match.group(1)
    return SetupKwargs(kwargs, address=request.target.address)


def rules():
    return [*collect_rules(), UnionRule(SetupKwargsRequest, TjxSetupKwargsRequest)]
