"""Python's warnings in a command's terminal: one ``prog: warning: ...`` line each (#71)."""

from __future__ import annotations

import io
import warnings

from tjx.core import warning_line, warning_lines


def _warn(message: str, category: type[Warning] = UserWarning) -> None:
    warnings.warn(message, category, stacklevel=2)


def test_a_warning_in_the_block_is_one_line_in_the_commands_voice():
    out = io.StringIO()
    shown_before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with warning_lines("trainer", out):
            _warn("W&B mode is 'offline': project 'tjx' will be written offline\n  under ./wandb")
            _warn("an old setting", DeprecationWarning)
        assert warnings.showwarning is shown_before  # Python's own again after the block
    assert out.getvalue().splitlines() == [
        "trainer: warning: W&B mode is 'offline': project 'tjx' will be written offline under "
        "./wandb",
        "trainer: warning: an old setting",
    ]
    assert "Warning:" not in out.getvalue() and ".py:" not in out.getvalue()


def test_what_python_hides_stays_hidden_and_stderr_is_read_when_warned(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("default", UserWarning)
        with warning_lines("eval"):
            _warn("hidden", DeprecationWarning)
            for _ in range(3):
                _warn("shown")  # "default": once per place
    assert capsys.readouterr().err == "eval: warning: shown\n"
    assert warning_line("eval", UserWarning("a\n\nb ")) == "eval: warning: a b"
