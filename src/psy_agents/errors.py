"""One error hierarchy for every user-facing failure.

Every error a user can cause is a :class:`PsyAgentsError` (a ``click.ClickException``):
it prints one line, ``error: <what is wrong> — <what to do>``, and exits with code 2.
Internal bugs are not caught here; ``launch`` turns them into one line too, and
``launch --debug`` shows the traceback.
"""

from __future__ import annotations

import click

USAGE_EXIT = 2


class PsyAgentsError(click.ClickException):
    """Root of all user-facing errors.

    Args:
        message: what is wrong, naming the file/row/column/field where one applies.
        fix: what the user should do about it; appended after an em dash.
    """

    exit_code = USAGE_EXIT

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.problem = message
        self.fix = fix
        full = f"{message} — {fix}" if fix else message
        # One line, always: a multi-line message would break log greps and the CLI contract.
        super().__init__(" ".join(full.split()))

    def show(self, file=None) -> None:  # noqa: D102 - click API
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class DataError(PsyAgentsError):
    """The ReDSM5 CSV files, a splits file or a data directory is unusable."""


class ConfigError(PsyAgentsError):
    """A flag, environment variable, profile file or params file holds a bad value."""


class StorageError(PsyAgentsError):
    """The Optuna storage (Postgres or SQLite) cannot be reached or used."""


class BackendError(PsyAgentsError):
    """A backend (local, slurm, k8s) cannot submit, query or cancel workers."""


class ModelError(PsyAgentsError):
    """A backbone or saved model cannot be found or loaded."""
