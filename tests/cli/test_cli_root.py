"""The CLI root: lazy imports, version, and the one error door (exit codes and one-line messages)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from psy_agents.cli import main as cli_main
from psy_agents.errors import ConfigError, DataError

HEAVY = ("torch", "transformers", "submitit", "kubernetes", "optuna", "mlflow", "pandas")


def run_main(argv, monkeypatch=None):
    """Run the console entry point in-process; return (exit code, captured stderr)."""
    with pytest.raises(SystemExit) as exc:
        cli_main.main(argv)
    return exc.value.code


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from psy_agents.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Commands:" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout


def test_help_lists_every_registered_command():
    out = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "--help"],
                         capture_output=True, text=True, check=True)
    for name in cli_main.COMMANDS:
        assert f"  {name} " in out.stdout


def test_version(capsys):
    assert run_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "launch, version 0.1.0"


def test_unknown_command_is_usage_error(capsys):
    assert run_main(["no-such-command"]) == 2
    assert capsys.readouterr().err == ("error: no such command 'no-such-command' — see "
                                       "'launch --help'\n")


def _install_failing_command(monkeypatch, exc: Exception) -> None:
    @click.command("boom")
    def boom() -> None:
        raise exc

    monkeypatch.setitem(cli_main.COMMANDS, "boom", ("tests.cli.test_cli_root:_unused", "x"))
    monkeypatch.setattr(cli_main.LazyGroup, "get_command",
                        lambda self, ctx, name: boom if name == "boom" else None)


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    _install_failing_command(monkeypatch, DataError("posts.csv row 3, column text: empty post",
                                                    "fill in the text or drop the row"))
    assert run_main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: posts.csv row 3, column text: empty post — "
                   "fill in the text or drop the row\n")


def test_multiline_message_is_folded_to_one_line(monkeypatch, capsys):
    _install_failing_command(monkeypatch, ConfigError("bad\nvalue", "fix\nit"))
    assert run_main(["boom"]) == 2
    assert capsys.readouterr().err == "error: bad value — fix it\n"


def test_internal_error_is_one_line_exit_1_without_debug(monkeypatch, capsys):
    monkeypatch.delenv("PSY_DEBUG", raising=False)
    _install_failing_command(monkeypatch, RuntimeError("kaput"))
    assert run_main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "internal error: RuntimeError: kaput" in err and "--debug" in err


def test_debug_shows_traceback(monkeypatch):
    _install_failing_command(monkeypatch, RuntimeError("kaput"))
    with pytest.raises(RuntimeError, match="kaput"):
        cli_main.main(["--debug", "boom"])
