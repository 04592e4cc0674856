"""Storage URLs: whether one is usable, how to print one, what kind of database it names,
where its file is.

Which URL a command uses is decided at the CLI edge (``--storage``, env ``PSY_STORAGE``, else
``psy_agents.settings.DEFAULT_STORAGE``); nothing here reads the environment.

Contracts:

- A URL is printed or logged only through :func:`mask_url`; an error message that may quote
  it goes through :func:`scrub`. Neither ever returns the password.
- :func:`check_storage_url` is the one place a URL is judged usable before anything opens
  it: every command that takes ``--storage`` calls it through
  ``psy_agents.cli.options.build_settings``. It imports SQLAlchemy's dialect and the URL's
  driver module (what opening the storage imports anyway) but touches no database.
- Every other function here is pure string/path work.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from psy_agents.errors import StorageError

_SQLITE_PREFIX = "sqlite:///"
# SQLAlchemy dialect -> its drivers as (driver name in the URL, module, pip package),
# the one to suggest first leading. A URL without "+driver" gets SQLAlchemy's default.
_DRIVERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "postgresql": (("psycopg2", "psycopg2", "psycopg2-binary"),
                   ("psycopg", "psycopg", "'psycopg[binary]'")),
    "mysql": (("pymysql", "pymysql", "pymysql"), ("mysqldb", "MySQLdb", "mysqlclient")),
    "mariadb": (("pymysql", "pymysql", "pymysql"), ("mysqldb", "MySQLdb", "mysqlclient")),
}

# user:password@ in the authority part, and password=... in a query string.
_AUTH_RE = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@?#]*):(?P<pw>[^@/?#]*)@")
_QUERY_PW_RE = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    masked = _AUTH_RE.sub(lambda m: f"{m['head']}:***@", url)
    return _QUERY_PW_RE.sub(lambda m: f"{m['head']}***", masked)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with the password of ``url`` replaced by ``***``."""
    for regex in (_AUTH_RE, _QUERY_PW_RE):
        match = regex.search(url)
        if match and match["pw"]:
            text = text.replace(match["pw"], "***")
    return text.replace(url, mask_url(url))


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for other URLs and ``:memory:``."""
    if not url.startswith(_SQLITE_PREFIX):
        return None
    raw = url[len(_SQLITE_PREFIX):].split("?", 1)[0]
    return None if raw in ("", ":memory:") else Path(raw)


def absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (against the current directory);
    any other URL unchanged. Idempotent.

    A worker may start in another directory than the launcher (Slurm, a restart), so the
    launcher hands it a URL that does not depend on where it starts.
    """
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    query = ("?" + url.split("?", 1)[1]) if "?" in url else ""
    return _SQLITE_PREFIX + str(path.resolve()) + query


def is_postgres(url: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs, with or without a driver."""
    return url.startswith(("postgresql", "postgres"))


def check_storage_url(url: str) -> str:
    """``url`` if a storage can be opened with it as far as can be told without connecting.

    Idempotent; reads nothing but the installed Python modules.

    Raises:
        StorageError: the URL does not parse, names no database (a server URL without
            ``/DBNAME`` silently uses the server's default database and whatever studies
            it holds), or needs a driver module that is not installed (which module, how to
            install it, and an installed driver for the same database if there is one).
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = mask_url(url)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:  # an ArgumentError too: caught first
        raise StorageError(f"storage URL {shown}: SQLAlchemy knows no database driver "
                           f"{parsed.drivername!r}",
                           "use sqlite:///PATH.db, postgresql+psycopg2://… or "
                           "mysql+pymysql://…") from None
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage URL {shown!r} is not a database URL",
                           "use sqlite:///PATH.db or "
                           "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DBNAME") from None
    server = parsed.get_backend_name() != "sqlite"
    if server and not parsed.database and not {"dbname", "database"} & set(parsed.query):
        base, sep, query = shown.partition("?")
        raise StorageError(f"storage URL {shown} names no database: the server would pick its "
                           "default one, with whatever studies it holds",
                           f"add /DBNAME: {base.rstrip('/')}/DBNAME{sep}{query}")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise _missing_driver(url, parsed.get_backend_name(), exc.name or str(exc)) from None
    return url


def _missing_driver(url: str, backend: str, module: str) -> StorageError:
    """The error for ``url``, whose driver ``module`` is not installed: how to install it,
    else which other driver of the same database to use (an installed one first)."""
    drivers = _DRIVERS.get(backend, ())
    package = next((pip for _, mod, pip in drivers if mod == module), module.split(".")[0])
    rest = mask_url(url).split("://", 1)[1]
    others = [(name, mod, pip) for name, mod, pip in drivers if mod != module]
    installed = [d for d in others if importlib.util.find_spec(d[1]) is not None]
    fix = f"`pip install {package}`"
    if installed:
        name, mod, _ = installed[0]
        fix = f"use {backend}+{name}://{rest} ({mod} is installed), or {fix}"
    elif others:
        name, _, pip = others[0]
        fix = f"{fix}, or `pip install {pip}` and use {backend}+{name}://{rest}"
    return StorageError(f"storage URL {mask_url(url)} needs the Python driver module "
                        f"{module}, which is not installed", fix)
