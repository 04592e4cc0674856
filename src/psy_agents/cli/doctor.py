"""Usage: launch doctor [--storage URL] --workers N

Checks that a storage is ready for N workers: reachable, Optuna schema version, Postgres
max_connections against N workers, clock skew between this host and the database. One line
per check (ok / warn / fail, and what to change). Exit 0 when nothing fails, 2 otherwise.
"""

from __future__ import annotations

import click


@click.command("doctor")
@click.option("--storage", default=None,
              help="Optuna storage URL [env: PSY_STORAGE; default sqlite:///runs/optuna.db]. "
                   "The password is never printed.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many workers will share the storage.")
def doctor(storage: str | None, workers: int) -> int:
    """Check the storage is ready for N workers (exit 2 when a check fails)."""
    from psy_agents.hpo.doctor import run_checks
    from psy_agents.hpo.storage import resolve_url

    checks = run_checks(resolve_url(storage), workers)
    for check in checks:
        click.echo(check.line())
    return 2 if any(c.status == "fail" for c in checks) else 0
