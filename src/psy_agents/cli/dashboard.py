"""Usage: launch dashboard [--storage URL] [--host 127.0.0.1] [--port 8080]

Serves optuna-dashboard (live plots, trial tables) on the study storage until Ctrl-C.
"""

from __future__ import annotations

import socket

import click

from psy_agents.cli.options import shared_options
from psy_agents.errors import ConfigError
from psy_agents.settings import Settings

HELP = """Serve optuna-dashboard on the study storage (until Ctrl-C).

\b
The dashboard can edit and delete studies: keep --host on a loopback address
unless the network is trusted.
"""


def _check_bindable(host: str, port: int) -> None:
    """Raise ConfigError unless ``host:port`` can be listened on.

    Probed before starting the server because Bottle announces "Listening on ..." before it
    binds, so a taken port would otherwise print a success line and then a traceback.
    """
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            # The server sets SO_REUSEADDR too; without it a port in TIME_WAIT looks taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          "pick another --port or --host") from None


@click.command("dashboard", help=HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="TCP port to listen on.")
@shared_options("storage")
def dashboard(host: str, port: int, settings: Settings) -> None:
    from optuna_dashboard import run_server

    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.storage_url import mask_url

    url = settings.storage
    rdb = open_storage(url)
    _check_bindable(host, port)
    # A wildcard address is where the server listens, not an address a browser can open.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown  # an IPv6 literal in a URL
    click.echo(f"optuna-dashboard: open http://{shown}:{port}/ "
               f"(storage {mask_url(url)}; Ctrl-C stops)")
    run_server(rdb, host=host, port=port)  # Bottle returns quietly on Ctrl-C
