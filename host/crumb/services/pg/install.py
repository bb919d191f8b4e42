"""`crumb pg install`: the crumb schema in a database, and where its backend finds crumb.

The functions run crumb's own verifier inside the server's PL/Python, which
has its own ``sys.path``: it does not see this virtual environment. So the
installer records, in crumb.settings (``python_path``), the directories this
Python imported crumb and its runtime dependencies from (crumb, ucrumb,
cbor2, nacl, _cffi_backend), and ``crumb._boot()`` puts them first on the
backend's path. The server's Python must then be the same minor version as
this one (cbor2 and PyNaCl carry C extensions built for it): checked before
anything is recorded. The directories must be readable by the server's OS
user; the backend imports from them at its first verification, so they
must stay where they are (install again after moving the environment).
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from ...replay import DEFAULT_LEEWAY

# What the backend imports: crumb and what the token core needs at run time
# (ucrumb: crumb's version; _cffi_backend: PyNaCl's bindings).
BACKEND_MODULES = ("crumb", "ucrumb", "cbor2", "nacl", "_cffi_backend")


class InstallError(RuntimeError):
    """The schema could not be installed; the message says why and what to do."""


def schema_sql() -> str:
    return resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


def module_files(modules: tuple[str, ...] = BACKEND_MODULES) -> dict[str, str]:
    """Each module's file here: a package's ``__init__.py``, or the module's own file."""
    out = {}
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise InstallError(f"{name} is not importable here: the backend could not import it either")
        out[name] = str(Path(spec.origin).resolve())
    return out


def python_path(modules: tuple[str, ...] = BACKEND_MODULES) -> list[str]:
    """The sys.path directories ``modules`` import from here, in order, each once."""
    out: list[str] = []
    for origin in map(Path, module_files(modules).values()):
        # A package's directory is below its path entry; a single-file module is in it.
        entry = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(entry) not in out:
            out.append(str(entry))
    return out


# Asked in the install's own transaction, by functions in pg_temp (gone with the session).
_PROBES = """
CREATE FUNCTION pg_temp.crumb_python() RETURNS text LANGUAGE plpython3u AS $$
import sys
return "%d.%d" % sys.version_info[:2]
$$;
CREATE FUNCTION pg_temp.crumb_loaded() RETURNS text[] LANGUAGE plpython3u AS $$
import crumb
return [crumb.__version__, crumb.__file__]
$$;
"""


def install(dsn: str, *, hop: str | None = None, audience: str | None = None, leeway: int = DEFAULT_LEEWAY,
            path: list[str] | None = None, log: str | None = None) -> dict[str, Any]:
    """Create or update the crumb schema; returns what was recorded and what the backend loaded.

    Runs in one transaction: on any error nothing changes. Needs a superuser
    (PL/Python is an untrusted language). ``log``: a service name turns on
    the service log (crumb.log) under that name; None or "" leaves it off.
    """
    path = path if path is not None else python_path()
    settings = {"python_path": "\n".join(path), "hop": hop or "", "audience": audience or "",
                "leeway": str(leeway), "log": log or ""}
    try:
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(schema_sql())
            cur.execute(_PROBES)
            server_python = _one(cur, "SELECT pg_temp.crumb_python()")
            if server_python != f"{sys.version_info[0]}.{sys.version_info[1]}":
                raise InstallError(
                    f"the server's PL/Python is Python {server_python}, this is Python "
                    f"{sys.version_info[0]}.{sys.version_info[1]}: run `crumb pg install` from an environment "
                    f"with Python {server_python} (cbor2 and PyNaCl are built for one Python version)")
            cur.executemany(
                "INSERT INTO crumb.settings (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value", list(settings.items()))
            # Load the backend now, in this transaction: a path the server cannot read, or a
            # package that does not import there, fails the install instead of the first query.
            cur.execute("SELECT crumb._boot()")
            version, file = _one(cur, "SELECT pg_temp.crumb_loaded()")
            keys = _one(cur, "SELECT count(*) FROM crumb.keys WHERE status = 'trusted'")
    except psycopg.Error as e:
        raise InstallError(_pg_message(e)) from None
    return {"crumb_version": version, "backend_imports": file, "python_path": path,
            "python": server_python, "hop": hop or None, "audience": audience or None, "leeway": leeway,
            "log": log or None, "trusted_keys": keys}


def _one(cur: psycopg.Cursor, query: str) -> Any:
    """The single value ``query`` returns."""
    row = cur.execute(query).fetchone()
    if row is None:
        raise InstallError(f"no answer to {query}")
    return row[0]


def _pg_message(e: psycopg.Error) -> str:
    diag = e.diag
    text = (diag.message_primary or str(e)).strip()
    if diag.context and "Traceback" in (diag.context or ""):
        text += "\n" + diag.context.strip()
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    return text
