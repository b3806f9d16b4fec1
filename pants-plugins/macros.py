"""BUILD-file macros (`[GLOBAL].build_file_prelude_globs` in pants.toml): every BUILD file sees
these names. Pants evaluates this file itself; nothing imports it."""

# The target types and `python_artifact` are the names Pants gives a BUILD file.
# ruff: noqa: F821


def tjx_distribution(package, description, extras_require=None):
    """The wheel of ``packages/tjx-<package>`` (target ``:dist``): its sources' ``:lib``, the
    project's Python and license, a wheel and no sdist. Its version is the package's
    ``__version__`` (pants-plugins/tjx_version); ``extras_require``: its optional extras, whose
    imports carry ``# pants: no-infer-dep`` so they stay out of install_requires."""
    extras = {} if extras_require is None else {"extras_require": extras_require}
    python_distribution(
        name="dist",
        dependencies=[f"packages/tjx-{package}/src/tjx/{package}:lib"],
        provides=python_artifact(
            name=f"tjx-{package}",
            description=description,
            python_requires=">=3.11",
            license="Apache-2.0",
            **extras,
        ),
        wheel=True,
        sdist=False,
    )


# Line coverage is each package's own tests' (tools/ci_summary.py's floor: 90 % a package). The
# apps', tools' and integration tests run the packages again, and coverage's tracer costs them
# dearly: on CPython 3.11 it is `sys.settrace`, which takes every traced process off the
# interpreter's fast path, tjx's modules or not (measured 2026-11-29, CPU seconds: the trainer's
# test_sft_run 28 -> 44, eval's test_eval_inprocess 39 -> 64, tests-integration's test_train_resume,
# whose runs are subprocesses, 51 -> 53). Their targets run pytest without it: a batch of them
# writes no coverage data (Pants says so in one warning line, pytest-cov in another), and the apps
# and tools are not measured.
WITHOUT_COVERAGE = ("PYTEST_ADDOPTS=--no-cov",)
