"""Usage: launch doctor [--storage URL] --workers N

Checks that a storage is ready for N workers: reachable, Optuna schema version, Postgres
max_connections against N workers, clock skew between this host and the database. One line
per check (ok / warn / fail, and what to change). Exit 0 when nothing fails, 2 otherwise.
"""

from __future__ import annotations

import click

from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings


@click.command("doctor")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many workers will share the storage.")
@shared_options("storage")
def doctor(workers: int, settings: Settings) -> int:
    """Check the storage is ready for N workers (exit 2 when a check fails)."""
    from psy_agents.hpo.doctor import run_checks

    checks = run_checks(settings.storage, workers)
    for check in checks:
        click.echo(check.line())
    return 2 if any(c.status == "fail" for c in checks) else 0
