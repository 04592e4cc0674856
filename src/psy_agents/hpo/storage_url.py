"""Storage URLs: how to print one, what kind of database it names, where its file is.

Which URL a command uses is decided at the CLI edge (``--storage``, env ``PSY_STORAGE``, else
``psy_agents.settings.DEFAULT_STORAGE``); nothing here reads the environment.

Contracts:

- A URL is printed or logged only through :func:`mask_url`; an error message that may quote
  it goes through :func:`scrub`. Neither ever returns the password.
- Every function here is pure string/path work: no database is touched, nothing heavy is
  imported.
"""

from __future__ import annotations

import re
from pathlib import Path

_SQLITE_PREFIX = "sqlite:///"

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
