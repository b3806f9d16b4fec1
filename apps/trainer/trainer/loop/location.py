"""A command line's run directory, read and checked before anything is written: where it is,
whether the run may start there fresh or resume (`RunDir.check_start`), and the config a resume
continues (`resumed_config`), each problem one `ConfigError` line naming the flag to change and
how. Standard library and tjx.ckpt's storage only, like `trainer.config.folder`.
"""

from __future__ import annotations

from pathlib import Path

from tjx.ckpt import NotCreatableError, RunFileError, RunFileNotFoundError, RunLockedError
from tjx.ckpt.storage import StoragePath
from tjx.core.config.values import ConfigError, keyed
from trainer.config.folder import RunDir, RunStartError
from trainer.config.seams import ConfigData

__all__ = ["in_use", "resumed_config", "start_location"]


def in_use(err: RunLockedError | str, flag: str = "--run-dir") -> ConfigError:
    """The one line for a run directory another trainer holds (``err``: who, as
    `tjx.ckpt.lock.RunLockedError` says it), and what to do."""
    return ConfigError(f"{flag}: {err}; wait for it to end or choose another {flag}")


def start_location(
    text: str, *, resume: bool, flag: str = "--run-dir", resume_flag: str = "--resume"
) -> StoragePath:
    """The run directory ``text`` names, checked for a run that starts fresh or resumes.

    Parameters
    ----------
    text : str
        A local path (``~`` expanded) or a ``gs://`` / ``s3://`` URL (an ``epath.Path``).
    resume : bool
        Whether the run resumes (it needs a checkpoint there) or starts fresh (it must find no
        step folder, committed or not: a fresh run never trains over an old one).
    flag, resume_flag : str
        The command's flags for the directory and for resuming, named in the messages.

    Returns
    -------
    Path or epath.Path
        The directory (nothing is written).

    Raises
    ------
    ConfigError
        ``FLAG: ...`` for a URL of another scheme or a folder that cannot be made
        (`NotCreatableError`); ``FLAG: ... is in use by another trainer (...)`` while one runs
        there (`in_use`); ``RESUME_FLAG: no checkpoint in ...`` for a resume with nothing to
        resume; ``FLAG: ... already holds checkpoints`` for a fresh start over an old run.
    """
    try:
        with keyed(flag, NotCreatableError):
            path = RunDir(text).path if "://" in text else Path(text).expanduser()
            RunDir(path).check_start(resume=resume)
    except RunLockedError as err:
        raise in_use(err, flag) from None
    except RunStartError as err:
        if err.resume:
            raise ConfigError(f"{resume_flag}: {err}; train without {resume_flag} first") from None
        raise ConfigError(
            f"{flag}: {err}; pass {resume_flag} to continue or choose another {flag}"
        ) from None
    return path


def resumed_config(
    run_dir: StoragePath | str, *, flag: str = "--run-dir", resume_flag: str = "--resume"
) -> ConfigData:
    """The saved ``config.yaml`` of the run a command resumes: what its checkpoints hold.

    Parameters
    ----------
    run_dir : path, URL or str
        The run's directory.
    flag, resume_flag : str
        The command's flags for the directory and for resuming, named in the message.

    Returns
    -------
    dict
        The config as saved.

    Raises
    ------
    ConfigError
        ``RESUME_FLAG: '.../config.yaml' is missing, so ...`` (or ``is not a readable run config
        (why)``): what the checkpoints were trained with is unknown.
    """
    folder = RunDir(run_dir)
    try:
        return folder.read_config()
    except RunFileError as err:  # a missing file is one too (RunFileNotFoundError)
        missing = isinstance(err, RunFileNotFoundError)
        problem = "is missing" if missing else f"is not a readable run config ({err.reason})"
        raise ConfigError(
            f"{resume_flag}: {str(folder.config_file)!r} {problem}, so what the checkpoints were "
            f"trained with is unknown; put the run's config back or train into a new {flag}"
        ) from None
