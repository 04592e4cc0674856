"""Usage: launch [--debug] COMMAND [ARGS]...

Root of the ``launch`` CLI. Subcommands live one per module and are imported only when
invoked, so ``launch --help`` never imports torch, transformers, submitit or kubernetes.
Every user error is a :class:`psy_agents.errors.PsyAgentsError`: one line, exit code 2.
A click usage error (missing argument, bad choice, unknown option, bad value) is one line
too, ``error: <message> — see 'launch CMD --help'``, exit code 2; help output is click's.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator

import click

from psy_agents import __version__
from psy_agents.errors import USAGE_EXIT, PsyAgentsError

# name -> (module:attribute, one-line help). The help lives here so listing the commands
# imports none of them. A new command is one entry.
COMMANDS: dict[str, tuple[str, str]] = {
    "hpo": ("psy_agents.cli.hpo:hpo", "Start a search: create the studies, start N workers."),
    "data": ("psy_agents.cli.data:data", "Validate, split, describe or synthesize ReDSM5 data."),
    "train": ("psy_agents.cli.train:train", "Train one agent configuration and evaluate it."),
    "eval": ("psy_agents.cli.eval:eval_cmd", "Evaluate a saved model on the val or test split."),
    "baseline": ("psy_agents.cli.baseline:baseline", "Score the TF-IDF + logistic regression baseline on val or test."),
    "bench": ("psy_agents.cli.bench:bench", "Benchmarks that print measured figures."),
    "worker": ("psy_agents.cli.worker:worker", "Run one HPO worker on study chains (exit 75 = requeue me)."),
    "status": ("psy_agents.cli.status:status", "Show progress of every study (counts, best, ETA, live workers)."),
    "best": ("psy_agents.cli.best:best", "Print the best trial of a study."),
    "export": ("psy_agents.cli.export:export", "Export best config, top-k and all trials (CSV/JSON)."),
    "report": ("psy_agents.cli.report:report", "Write a self-contained HTML report of a study."),
    "dashboard": ("psy_agents.cli.dashboard:dashboard", "Serve optuna-dashboard on the study storage."),
    "cancel": ("psy_agents.cli.cancel:cancel", "Stop the workers of an experiment on any backend."),
    "plan": ("psy_agents.cli.plan:plan", "Project a campaign's wall time from measured figures."),
    "doctor": ("psy_agents.cli.doctor:doctor", "Check the storage is ready for N workers."),
}


_ARGS_KEY = "psy_agents.args"  # the root's arguments, in its context's meta


class UserError(click.ClickException):
    """A :class:`PsyAgentsError` as click output: ``error: <message>`` on stderr, exit 2."""

    def __init__(self, error: PsyAgentsError) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:  # noqa: D102 - click API
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class OneLineUsage(click.UsageError):
    """A click usage error as one line on stderr, exit 2:
    ``error: <message> — see '<command path> --help'`` (click's own shows three)."""

    def __init__(self, error: click.UsageError, where: str) -> None:
        super().__init__(error.format_message(), error.ctx)
        self.where = where
        self.exit_code = USAGE_EXIT

    def show(self, file=None) -> None:  # noqa: D102 - click API
        message = " ".join(self.format_message().split()).removesuffix(".")
        if message[1:2].islower():  # "Missing option" -> "missing option"; "--x" stays
            message = message[0].lower() + message[1:]
        click.echo(f"error: {message} — see '{self.where} --help'", err=True, file=file)


@contextlib.contextmanager
def _one_line_usage(root: click.Context | None = None) -> Iterator[None]:
    """Re-raise a click usage error as :class:`OneLineUsage`; a group called without a
    subcommand (click's NoArgsIsHelpError) still shows its help."""
    try:
        yield
    except (OneLineUsage, click.exceptions.NoArgsIsHelpError):
        raise
    except click.UsageError as exc:
        if exc.ctx is not None:
            where = exc.ctx.command_path
        else:  # click raises "requires an argument" without its context
            where = _command_path(root) if root is not None else "launch"
        raise OneLineUsage(exc, where) from exc


def _command_path(root: click.Context) -> str:
    """``launch data split``: the root's name and the (sub)command names among its
    arguments (kept by :meth:`LazyGroup.parse_args`), up to the first plain command."""
    path, cmd = [root.command_path], root.command
    for token in root.meta.get(_ARGS_KEY, []):
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(root, token)
        if sub is not None:  # else a group's own option
            path.append(token)
            cmd = sub
    return " ".join(path)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; the one door through which a
    user error (a :class:`PsyAgentsError`, raised anywhere below) or a usage error (of the
    root or any subcommand) becomes one line of click output."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _one_line_usage():
            return super().make_context(info_name, args, parent=parent, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        with _one_line_usage(ctx):
            try:
                return super().invoke(ctx)
            except PsyAgentsError as exc:
                raise UserError(exc) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            target, _ = COMMANDS[cmd_name]
            module_name, attr = target.split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="launch")
@click.option("--debug", is_flag=True, envvar="PSY_DEBUG",
              help="Show full tracebacks on errors [env: PSY_DEBUG].")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Distributed hyperparameter search for the four ReDSM5 agents.

    Start with `launch data validate --data-dir data/sample`, then
    `launch hpo --agent criteria` (local worker, SQLite under runs/, offline model).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("PSY_DEBUG", "").lower() in {"1", "true", "yes"}


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the CLI and maps every failure to an exit code.

    Exit codes: 0 ok, 1 internal error, 2 user error (bad input, usage), 130 interrupted.
    Commands may also return an int exit code (the worker's "requeue me" code, say).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        rv = cli.main(args=args, prog_name="launch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # an internal bug: one line unless --debug
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} "
                   "— rerun as `launch --debug …` for the traceback and report it", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
