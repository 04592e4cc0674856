"""One error hierarchy for every user-facing failure, and the worker's control-flow signals.

Every error a user can cause is a :class:`PsyAgentsError`: one line, ``<what is wrong> — <what
to do>``, and exit code 2. This module imports nothing but the standard library (no click, no
torch), so data, training and backend code can raise these without depending on the CLI;
``launch`` (``psy_agents.cli.main``) turns them into ``error: ...`` on stderr and the exit
code. Internal bugs are not caught here; ``launch`` turns them into one line too, and
``launch --debug`` shows the traceback.
"""

from __future__ import annotations

USAGE_EXIT = 2
# The worker's "requeue me" exit code (EX_TEMPFAIL): it was stopped (SIGTERM/SIGUSR2), its
# trial is checkpointed and re-queued, and a restarted worker resumes it. Every backend and
# the worker read it from here.
EXIT_REQUEUE = 75


class PsyAgentsError(Exception):
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
        self.message = " ".join(full.split())
        super().__init__(self.message)

    def format_message(self) -> str:
        """The one-line message (without the ``error:`` prefix the CLI adds)."""
        return self.message


class DataError(PsyAgentsError):
    """The ReDSM5 CSV files, a splits file or a data directory is unusable."""


class ConfigError(PsyAgentsError):
    """A flag, environment variable, profile file or params file holds a bad value."""


class StorageError(PsyAgentsError):
    """The Optuna storage (Postgres or SQLite) cannot be reached or used."""


class StorageUnavailable(StorageError):
    """The storage did not answer (refused, timed out, dropped): it may answer later, unlike
    a wrong password or a missing schema. ``launch worker`` exits :data:`EXIT_REQUEUE` on it,
    so its backend starts it again instead of failing it for good."""


class BackendError(PsyAgentsError):
    """A backend (local, slurm, k8s) cannot submit, query or cancel workers."""


class ModelError(PsyAgentsError):
    """A backbone or saved model cannot be found or loaded."""


class RunFailed(PsyAgentsError):
    """A search ran but did not succeed: a worker failed for good, or a stage ended without
    one COMPLETE trial. Exit code 1: the input was accepted, the run itself failed."""

    exit_code = 1


class Preempted(Exception):  # noqa: N818 - the name says what happened
    """The worker was asked to stop (SIGTERM/SIGUSR2); the trial's last finished epoch is
    checkpointed. Raised by the training loop and the simulated workload; the worker
    re-queues the trial and exits with :data:`EXIT_REQUEUE`."""


class TrialFailed(Exception):  # noqa: N818 - the name says what happened
    """A trial failed for a reason recorded in its user attrs (``fail_reason``); the worker
    logs one line and goes on with the next trial."""
