"""`crumb pg`: install crumb's schema in a PostgreSQL database and keep its trusted keys."""

from __future__ import annotations

import json
import sys

import click

from ...extras import require
from ...replay import DEFAULT_LEEWAY


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group("pg")
def pg_group() -> None:
    """crumb inside PostgreSQL: verification in SQL, for row-level security (docs/postgres.md)."""
    require("pg", "crumb pg")


_DSN = click.option("--dsn", required=True, envvar="CRUMB_PG_DSN", show_envvar=True,
                    help="libpq connection string or URI (install: a superuser).")


@pg_group.command("install")
@_DSN
@click.option("--hop", default="", help="This database's hop name in declared chains (default: the destination).")
@click.option("--audience", default="", help="This database's audience name (tokens with aud must name it).")
@click.option("--leeway", default=DEFAULT_LEEWAY, show_default=True, type=click.IntRange(0, 3600),
              help="Seconds of clock difference allowed on exp, nbf and iat.")
@click.option("--python-path", "path", multiple=True, metavar="DIR",
              help="Directories the server's Python imports crumb from (repeatable; default: where this "
                   "Python imports crumb, ucrumb, cbor2, nacl and _cffi_backend from).")
@click.option("--log", "log_name", default="", metavar="NAME",
              help="Keep the service log (table crumb.log) under this service name: one hash-chained record "
                   "per accepted token, in the transaction that spends it (default: no log). Pass it again "
                   "on every install: each install records the settings it is given.")
def install_cmd(dsn: str, hop: str, audience: str, leeway: int, path: tuple[str, ...], log_name: str) -> None:
    """Create or update the crumb schema (tables, crumb.verify, crumb.allows) in one transaction."""
    from .install import InstallError, install

    try:
        report = install(dsn, hop=hop, audience=audience, leeway=leeway, path=list(path) or None,
                         log=log_name or None)
    except InstallError as e:
        _fail(str(e))
    click.echo(json.dumps(report, indent=1))


@pg_group.group("keys")
def keys_group() -> None:
    """The database's trusted keys (table crumb.keys)."""


@keys_group.command("sync")
@_DSN
@click.option("--issuer", "issuer_url", required=True, metavar="URL",
              help="The issuer's base URL (or its /keys URL).")
@click.option("--timeout", default=5.0, show_default=True, type=float, help="Seconds for GET /keys.")
def keys_sync_cmd(dsn: str, issuer_url: str, timeout: float) -> None:
    """Trust the keys the issuer publishes at GET /keys; retire the ones it no longer lists."""
    from ..keyfetch import KeyFetchError
    from .keys import KeyTableError, sync

    try:
        report = sync(dsn, issuer_url, timeout=timeout)
    except (KeyFetchError, KeyTableError) as e:
        _fail(str(e))
    click.echo(json.dumps(report, indent=1))


@keys_group.command("add")
@_DSN
@click.option("--pub", "issuer_files", multiple=True, metavar="FILE", help="Issuer public key file (repeatable).")
@click.option("--node", "node_specs", multiple=True, metavar="NAME=FILE",
              help="A hop's or attenuator's public key file (repeatable), for tokens naming hops by kid.")
def keys_add_cmd(dsn: str, issuer_files: tuple[str, ...], node_specs: tuple[str, ...]) -> None:
    """Pin keys from files (no issuer to sync from): trusted until removed by hand."""
    from ...keys import KeyFileError, load_public_key
    from .keys import KeyTableError, add

    if not issuer_files and not node_specs:
        raise click.UsageError("give --pub and/or --node")
    try:
        issuer = [load_public_key(p) for p in issuer_files]
        nodes = []
        for spec in node_specs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise click.UsageError(f"--node takes NAME=FILE, got {spec!r}")
            nodes.append((name, load_public_key(path)))
    except KeyFileError as e:
        raise click.UsageError(str(e)) from None
    try:
        report = add(dsn, issuer, nodes)
    except KeyTableError as e:
        _fail(str(e))
    click.echo(json.dumps(report, indent=1))


@keys_group.command("list")
@_DSN
def keys_list_cmd(dsn: str) -> None:
    """The keys in crumb.keys, as JSON."""
    from .keys import KeyTableError, listing

    try:
        rows = listing(dsn)
    except KeyTableError as e:
        _fail(str(e))
    click.echo(json.dumps(rows, indent=1))
