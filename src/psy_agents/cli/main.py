"""Usage: launch [--debug] COMMAND [ARGS]...

Root of the ``launch`` CLI. Subcommands live one per module and are imported only when
invoked, so ``launch --help`` never imports torch, transformers, submitit or kubernetes.
Every user error is a :class:`psy_agents.errors.PsyAgentsError`: one line, exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from psy_agents import __version__
from psy_agents.errors import PsyAgentsError

# name -> (module:attribute, one-line help). The help lives here so listing the commands
# imports none of them. A new command is one entry.
COMMANDS: dict[str, tuple[str, str]] = {
    "hpo": ("psy_agents.cli.hpo:hpo", "Start a search: create the studies, start N workers."),
    "data": ("psy_agents.cli.data:data", "Validate, split, describe or synthesize ReDSM5 data."),
    "train": ("psy_agents.cli.train:train", "Train one agent configuration and evaluate it."),
    "eval": ("psy_agents.cli.eval:eval_cmd", "Evaluate a saved model on the val or test split."),
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


class UserError(click.ClickException):
    """A :class:`PsyAgentsError` as click output: ``error: <message>`` on stderr, exit 2."""

    def __init__(self, error: PsyAgentsError) -> None:
        super().__init__(error.format_message())
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:  # noqa: D102 - click API
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use; the one door through which a
    user error (a :class:`PsyAgentsError`, raised anywhere below) becomes click output."""

    def invoke(self, ctx: click.Context):
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
                   "— rerun with --debug for the traceback and report it", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
