"""Command line for the issuer: `crumb issuer|policy|keys|device|audit ...`.

Exit codes follow crumb's CLI: 0 ok, 1 a check failed (policy invalid, audit
chain broken), 2 usage or setup error.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import click

from ..extras import require
from .datadir import DEFAULT_DATA, ENV_DATA, DataDir

_data_option = click.option(
    "--data", "data_dir", envvar=ENV_DATA, default=DEFAULT_DATA, show_default=True,
    type=click.Path(file_okay=False), help=f"Issuer data directory (or ${ENV_DATA}).")


def _setup_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def make_app(settings):
    """Build the ASGI app in the serving process (picklable for worker processes)."""
    from .app import IssuerApp, build_issuer

    return IssuerApp(build_issuer(settings))


# -- crumb issuer ---------------------------------------------------------------------


@click.group("issuer")
def issuer_group() -> None:
    """Run the token issuer."""


@issuer_group.command("serve")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="Policy file (TOML). Default: DATA/policy.toml if present, else deny everything.")
@_data_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port; the first line printed says which).")
@click.option("--redis", "redis_url", metavar="URL",
              help="Redis for nonces, rate limits and revocations, shared by several issuer processes "
                   "(redis://[:password@]host:port/db).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Issuer processes sharing the port (needs --redis when more than 1).")
@click.option("--audit-sync", type=click.Choice(["full", "normal"]), default="full", show_default=True,
              help="SQLite synchronous mode of the audit log: full = durable at each group commit.")
@click.option("--audit-segment-records", type=click.IntRange(0, None), default=1_000_000, show_default=True,
              help="Rotate the audit log into a new segment after this many records (0: never); "
                   "see `crumb audit archive` and `crumb audit prune`.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
@click.option("--max-header-bytes", default=8192, show_default=True, type=click.IntRange(1024, 1 << 20),
              help="Most bytes in a request's request line and headers (431 beyond).")
@click.option("--max-headers", default=64, show_default=True, type=click.IntRange(8, 1000),
              help="Most header lines in a request (431 beyond).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a client has to send a request's head, from connecting or from its first byte (408).")
@click.option("--body-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a client has to send a request's body once its head is in (408).")
@click.option("--keep-alive-timeout", default=30.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds an idle connection is kept open between requests.")
@click.option("--coap", is_flag=True,
              help="Also serve POST /token over CoAP (UDP, RFC 7252; PROTOCOL.md §13) on --host, in the same process.")
@click.option("--coap-port", default=5683, show_default=True, type=click.IntRange(0, 65535),
              help="UDP port for --coap (0: any free port; a line printed says which).")
def serve_cmd(config, data_dir, host, port, redis_url, processes, audit_sync, audit_segment_records, log_level,
              max_header_bytes, max_headers, header_timeout, body_timeout, keep_alive_timeout, coap,
              coap_port) -> None:
    """Serve POST /token, GET /keys, /healthz and /metrics over HTTP (and POST /token over CoAP with --coap)."""
    require("issuer", "crumb issuer serve")
    if coap:
        require("coap", "crumb issuer serve --coap")
        if processes > 1:
            raise click.UsageError("--coap serves from one process: the UDP port is not shared between processes "
                                   "(run --processes 1, or a separate CoAP issuer on the same --redis)")
    from ..keys import KeyFileError
    from . import _native
    from .app import Settings, build_issuer
    from .httplimits import HttpLimits
    from .policy import PolicyError
    from .server import serve

    limits = HttpLimits(max_header_bytes, max_headers, header_timeout, body_timeout, keep_alive_timeout)

    if processes > 1 and not redis_url:
        raise click.UsageError("--processes > 1 needs --redis: without it each process would keep its own "
                               "nonces and rate limits, and a replay could pass through another process")
    settings = Settings(DataDir(data_dir), Path(config) if config else None, redis_url, audit_sync.upper(),
                        audit_segment_records=audit_segment_records)
    try:
        issuer = build_issuer(settings)  # in this process too: fail early, and say where things are
    except PolicyError as e:
        click.echo(str(e), err=True)
        _setup_error("the policy has errors (see above); `crumb policy check` explains them")
    except (KeyFileError, OSError) as e:
        _setup_error(str(e))
    data = settings.data
    policy_path = settings.resolved_policy_path()
    key = issuer.keyring.current
    lines = [
        f"  data dir     {data.root}",
        f"  master key   {data.master}",
        f"  root key     kid {key.kid.hex() if key else '?'}  ({data.keys})",
        (f"  registry     {data.registry}  ({len(issuer.registry.known)} enrolled, "
        f"{len(issuer.registry.revoked)} revoked)"),
        (f"  audit log    {issuer.audit.segment_path}  (synchronous={audit_sync}, segment {issuer.audit.segment}, "
         f"{f'rotating every {audit_segment_records:,} records' if audit_segment_records else 'no rotation'})"),
        f"  audit writer {_native.describe()}",
        f"  policy       {policy_path if policy_path else 'none: every request is denied (pass --config FILE)'}",
        f"  store        {'redis ' + redis_url if redis_url else 'in memory (this process only)'}",
        "  endpoints    POST /token  GET /keys  GET /healthz  GET /metrics",
        (f"  limits       head {max_header_bytes} B, {max_headers} headers, in {header_timeout:g} s; "
         f"body {issuer.policy.max_request_bytes} B (policy), in {body_timeout:g} s; idle {keep_alive_timeout:g} s"),
    ]
    cpus = os.cpu_count() or 1
    if processes > 1 and 2 * processes > cpus:
        lines.append(f"  note         {processes} processes on {cpus} CPUs: each uses up to about two cores (event "
                     "loop and audit writer), so here they share cores, and each token also costs a Redis round "
                     "trip; fewer processes may well be faster (docs/issuer.md §9)")
    if processes == 1:
        from .app import IssuerApp

        companions: tuple = ()
        if coap:
            from .coap import CoapServer

            def announce(bound: int) -> None:
                # Its own line, once the UDP port is bound (port 0: any free one): tests read it.
                where = f"[{host}]" if ":" in host else host
                click.echo(f"crumb issuer CoAP on coap://{where}:{bound}  (POST /token, Content-Format 19)", err=True)

            companions = (CoapServer(issuer, host, coap_port, announce),)
        factory = functools.partial(IssuerApp, issuer, companions)
    else:
        issuer.registry.close()  # each worker process builds its own...
        os.close(issuer.audit.lock_fd)  # ...and claims an audit chain of its own
        factory = functools.partial(make_app, settings)

    def ready(bound: int) -> None:
        # The port bound (port 0 is any free one): tests and benches read it from this first line.
        where = f"[{host}]" if ":" in host else host
        head = f"crumb issuer on http://{where}:{bound}  ({processes} process{'es' if processes > 1 else ''})"
        click.echo("\n".join([head, *lines]), err=True)

    try:
        serve(factory, host, port, processes, log_level, ready=ready, limits=limits)
    except OSError as e:
        _setup_error(f"cannot listen on {host}:{port}: {e.strerror or e}")


# -- crumb policy ---------------------------------------------------------------------


@click.group("policy")
def policy_group() -> None:
    """Check issuer policy files."""


@policy_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_check(file: str) -> None:
    """Validate FILE; explain each problem with its line number (exit 1 if any)."""
    from .policy import PolicyError, load

    try:
        policy = load(file)
    except PolicyError as e:
        for line in e.lines():
            click.echo(line, err=True)
        n = len(e.problems)
        click.echo(f"{file}: {n} problem{'s' if n != 1 else ''}", err=True)
        sys.exit(1)
    click.echo(f"{file}: ok: {len(policy.groups)} group(s), {len(policy.devices)} device table(s), "
               f"{policy.rule_count} rule(s), {len(policy.nodes)} node key(s); deny by default")


# -- crumb keys -----------------------------------------------------------------------


@click.group("keys")
def keys_group() -> None:
    """The issuer's root signing keys."""


@keys_group.command("rotate")
@_data_option
def keys_rotate(data_dir: str) -> None:
    """Make a new signing key; the old one stays published as 'previous'."""
    from .keystore import Keyring

    ring = Keyring.open(DataDir(data_dir).create().keys)
    old = ring.current
    new = ring.rotate()
    click.echo(f"current  {new.kid.hex()}")
    if old is not None:
        click.echo(f"previous {old.kid.hex()}  (still published; tokens it signed verify until they expire)")
    click.echo("a running issuer switches within a second", err=True)


@keys_group.command("list")
@_data_option
def keys_list(data_dir: str) -> None:
    """Show the published keys."""
    from ..keys import KeyFileError
    from .keystore import Keyring

    try:
        ring = Keyring.open(DataDir(data_dir).keys, create=False)
    except KeyFileError as e:
        _setup_error(str(e))
    for key, status in ring.published():
        click.echo(f"{status:<9}{key.kid.hex()}  {ring.dir / (key.kid.hex() + '.jwk.pub')}")
    for kid in ring.retired:
        click.echo(f"{'retired':<9}{kid}")


# -- crumb device ---------------------------------------------------------------------


@click.group("device")
def device_group() -> None:
    """Enroll and revoke devices."""


def _policy_for(config: str | None, data: DataDir):
    from .policy import PolicyError, load

    path = Path(config) if config else (data.policy if data.policy.exists() else None)
    if path is None:
        return None
    try:
        return load(path)
    except PolicyError as e:
        click.echo(str(e), err=True)
        _setup_error(f"the policy {path} has errors")


def open_lifecycle(data_dir: str, config: str | None, url: str | None, ca: str | None):
    """A devices.Lifecycle for the data dir, with the policy's issuer URL and the CA pin (or exit 2)."""
    from .devices import Lifecycle, LifecycleError, read_ca

    data = DataDir(data_dir)
    policy = _policy_for(config, data)
    try:
        pem = read_ca(ca) if ca else None
    except LifecycleError as e:
        _setup_error(str(e))
    life = Lifecycle(data, url=url, policy_url=policy.url if policy is not None else None, ca=pem)
    if life.url.startswith("https:") and pem is None:
        click.echo(f"warning: {life.url} is https and no --ca was given: MicroPython has no CA store, so the "
                   "device will refuse the issuer until its crumb.json has a \"ca\" (or its config a cadata)",
                   err=True)
    return life, policy


def _check_group(policy, group: str | None, where: str = "") -> None:
    if policy is not None and group is not None and group not in policy.groups:
        click.echo(f"warning: {where}group {group!r} is not defined in {policy.source}; the device will be "
                   "denied everything until it is", err=True)


def _emit_credentials(creds: dict, out: str | None, what: str) -> None:
    from .devices import credential_text, write_credentials

    if out:
        write_credentials(out, creds)
        click.echo(f"{what}; credentials written to {out} (0600)", err=True)
    else:
        click.echo(credential_text(creds), nl=False)


@device_group.command("add")
@click.argument("device_id", required=False)
@click.option("--group", help="Policy group the device belongs to.")
@_data_option
@click.option("--config", type=click.Path(dir_okay=False), help="Policy file (for the issuer URL and group check).")
@click.option("--url", help="Issuer URL written into the credentials (default: the policy's [issuer] url).")
@click.option("--ca", type=click.Path(dir_okay=False),
              help="PEM file of the CA that signs the issuer's TLS certificate; written into the credentials "
                   "so the device verifies the issuer against it (needed for https on MicroPython).")
@click.option("--out", type=click.Path(),
              help="Write the credentials here (0600) instead of stdout; with --from, a directory (one ID.json each).")
@click.option("--from", "from_csv", type=click.Path(dir_okay=False),
              help="Enroll every device of a CSV file (columns: id, and optionally group and url); needs --out.")
def device_add(device_id, group, data_dir, config, url, ca, out, from_csv) -> None:
    """Enroll DEVICE_ID and print its credentials: the crumb.json the firmware loads.

    Running it again for an enrolled device moves it to --group and gives the
    same key. With --from FILE, enroll every row of a CSV file, writing
    OUT/ID.json for each; bad rows are reported with their line and skipped
    (exit 1 if any), duplicate ids refused. Every enrolment is recorded in
    the audit log.
    """
    from .devices import LifecycleError, read_csv, write_credentials

    if from_csv is None:
        if device_id is None:
            raise click.UsageError("give a DEVICE_ID, or --from FILE for many")
        from .protocol import check_device_id

        try:
            check_device_id(device_id)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        life, policy = open_lifecycle(data_dir, config, url, ca)
        _check_group(policy, group)
        with life:
            try:
                creds, new = life.enroll(device_id, group)
            except LifecycleError as e:
                _setup_error(str(e))
        _emit_credentials(creds, out, f"{'enrolled' if new else 're-enrolled'} {device_id}")
        return
    if device_id is not None or group is not None:
        raise click.UsageError("--from takes the ids and groups from the file: no DEVICE_ID or --group")
    if not out:
        raise click.UsageError("--from needs --out DIR: one credential file per device, never on stdout")
    life, policy = open_lifecycle(data_dir, config, url, ca)
    outdir = Path(out)
    try:
        outdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        rows = list(read_csv(from_csv))
    except LifecycleError as e:
        life.close()
        _setup_error(str(e))
    except OSError as e:
        life.close()
        _setup_error(f"cannot create {outdir}: {e}")
    counts = {"enrolled": 0, "re-enrolled": 0, "refused": 0}
    with life:
        for row in rows:
            if not hasattr(row, "id"):
                click.echo(f"{from_csv}:{row.line}: skipped: {row.message}", err=True)
                counts["refused"] += 1
                continue
            _check_group(policy, row.group, f"{from_csv}:{row.line}: ")
            try:
                creds, new = life.enroll(row.id, row.group, row.url)
                write_credentials(outdir / f"{row.id}.json", creds)
            except (LifecycleError, OSError) as e:
                click.echo(f"{from_csv}:{row.line}: skipped: {e}", err=True)
                counts["refused"] += 1
                continue
            counts["enrolled" if new else "re-enrolled"] += 1
    click.echo(f"{counts['enrolled']} enrolled, {counts['re-enrolled']} re-enrolled, {counts['refused']} rows "
               f"refused; credentials in {outdir}/ID.json (0600)")
    sys.exit(1 if counts["refused"] else 0)


@device_group.command("rekey")
@click.argument("device_id")
@_data_option
@click.option("--config", type=click.Path(dir_okay=False), help="Policy file (for the issuer URL).")
@click.option("--url", help="Issuer URL written into the credentials (default: the policy's [issuer] url).")
@click.option("--ca", type=click.Path(dir_okay=False), help="PEM file of the CA the device pins the issuer to.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the new credentials here (0600) instead of stdout.")
def device_rekey(device_id, data_dir, config, url, ca, out) -> None:
    """Give DEVICE_ID a new key, keeping its id; print the new credentials.

    From the issuer's next request on, the old key gets `bad_mac` and only
    the new one gets tokens (tokens already issued live out their time).
    For a replaced board or a leaked key. Recorded in the audit log.
    """
    from .devices import LifecycleError
    from .protocol import check_device_id

    try:
        check_device_id(device_id)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    life, _ = open_lifecycle(data_dir, config, url, ca)
    with life:
        try:
            creds, keygen = life.rekey(device_id)
        except (LifecycleError, ValueError) as e:
            _setup_error(str(e))
    _emit_credentials(creds, out, f"rekeyed {device_id} (key generation {keygen})")


@device_group.command("revoke")
@click.argument("device_id")
@click.option("--reason", help="Why (kept in the registry).")
@_data_option
@click.option("--redis", "redis_url", metavar="URL",
              help="Also publish the revocation to this Redis (issuers running with --redis).")
def device_revoke(device_id, reason, data_dir, redis_url) -> None:
    """Deny DEVICE_ID everything from its next request on. Recorded in the audit log."""
    from .devices import Lifecycle
    from .gate import REVOKED_KEY
    from .protocol import check_device_id

    try:
        check_device_id(device_id)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    data = DataDir(data_dir)
    with Lifecycle(data) as life:
        changed = life.revoke(device_id, reason)
    click.echo(f"revoked {device_id}" if changed else f"{device_id} was already revoked")
    if redis_url:
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_timeout=3).sadd(REVOKED_KEY, device_id)
        except redis.RedisError as e:
            _setup_error(f"revoked in {data.registry}, but could not publish to Redis at {redis_url}: {e}; "
                         "issuers sharing this data dir see it, others do not until Redis is reachable "
                         "(rerun this command)")
        click.echo(f"published to {redis_url}")


@device_group.command("list")
@_data_option
def device_list(data_dir) -> None:
    """List enrolled and revoked devices."""
    from .registry import Registry

    data = DataDir(data_dir)
    if not data.registry.exists():
        _setup_error(f"no registry at {data.registry}")
    registry = Registry(data.registry)
    for d in registry.all():
        if d.revoked:
            state = "revoked " + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.revoked))
        else:
            state = "enrolled" if d.added is not None else "policy"
        key = f"  key #{d.keygen}" if d.keygen else ""
        click.echo(f"{d.id:<24} {d.group or '-':<16} {state}{key}{'  (' + d.reason + ')' if d.reason else ''}")
    registry.close()


# -- crumb audit ----------------------------------------------------------------------


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit log."""


@audit_group.command("verify")
@_data_option
@click.option("--head", "heads", multiple=True, metavar="[FILE=]HEX",
              help="A head hash an earlier verify printed: it must still be the hash of one of the chain's records "
                   "(detects records cut off the end). FILE=HEX names the chain when there are several "
                   "(repeatable); a chain named so must exist.")
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, exists=True),
              help="A directory `crumb audit archive` wrote: its segments come first, so each chain is checked "
                   "from its first record across archive and data directory.")
@click.option("--log", "logs", multiple=True, metavar="FILE|DIR|DSN",
              help="Verify these logs instead of --data: a service's log file, an issuer data directory, or a "
                   "PostgreSQL DSN (its crumb.log table). Repeatable.")
@click.option("--dsn", "dsns", multiple=True, metavar="DSN",
              help="A PostgreSQL DSN whose crumb.log (the database's service log) to verify; same as --log DSN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the time taken and records/s).")
def audit_verify(data_dir, heads, archive_dir, logs, dsns, as_json) -> None:
    """Check every chain end to end, across its segments; name the first broken record (exit 1 if any).

    Every row of every segment is accounted for, and every --head names a
    chain that must exist: a chain file deleted since its head was noted is a
    failure. DATA may be an archive directory: it verifies on its own. With
    --log or --dsn, the logs named are verified instead (the services' logs
    and the issuer's share one record format and chain); --head and
    --archive apply to --data only.
    """
    from . import audit

    if logs or dsns:
        if heads or archive_dir:
            raise click.UsageError("--head and --archive apply to --data, not to --log or --dsn")
        _verify_logs([*logs, *dsns], as_json)
    data = DataDir(data_dir)
    archive = Path(archive_dir) if archive_dir else None
    paths = data.audit_logs()
    if archive is not None:
        from .datadir import audit_chains

        paths = sorted(set(paths) | {data.root / p.name for p in audit_chains(archive)},
                       key=lambda p: (p.name != "audit.db", len(p.name), p.name))
    if not paths and not heads:
        _setup_error(f"no audit log in {data.root}")
    expected: dict[str, bytes] = {}
    for head in heads:
        name, sep, hexed = head.rpartition("=")
        name = name if sep else (paths[0].name if paths else data.audit.name)
        try:
            expected[name] = bytes.fromhex(hexed)
        except ValueError:
            raise click.UsageError(f"--head {head!r}: the head is a hex SHA-256") from None
    chains = []
    started = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        try:
            v = audit.verify(path, expected.get(path.name), archive)
        except (OSError, sqlite3.Error) as e:  # a segment that is not an SQLite database, or unreadable
            v = audit.Verdict(False, 0, audit.GENESIS, None, f"cannot read the chain: {e}")
        chains.append({"file": path.name, "ok": v.ok, "records": v.count, "rows": v.rows, "segments": v.segments,
                       "first": v.first, "head": v.head.hex(), "broken_at": v.broken_at, "reason": v.reason,
                       "seconds": round(time.perf_counter() - t0, 6)})
    present = {path.name for path in paths}
    for name in sorted(set(expected) - present):  # a head was noted for a chain that is gone
        chains.append({"file": name, "ok": False, "records": 0, "rows": 0, "segments": 0, "first": 1,
                       "head": audit.GENESIS.hex(), "broken_at": None, "missing": True,
                       "reason": f"no chain {name} in {data.root}, but --head expects one with head "
                                 f"{expected[name].hex()}: the chain file was deleted or moved"})
    ok = all(c["ok"] for c in chains)
    seconds = time.perf_counter() - started
    if as_json:
        rows = sum(c["rows"] for c in chains)
        click.echo(json.dumps({"ok": ok, "chains": chains, "seconds": round(seconds, 6),
                               "records_per_s": round(rows / seconds) if seconds > 0 else None}))
    else:
        for c in chains:
            segs = f"{c['segments']} segment{'s' if c['segments'] != 1 else ''}"
            since = f" (records {c['first']} on, after the anchor)" if c["first"] > 1 else ""
            if c["ok"]:
                click.echo(f"{c['file']}: ok: {c['records']} records in {segs}{since}, chain intact; head {c['head']}")
            elif c.get("missing"):
                click.echo(f"{c['file']}: MISSING: {c['reason']}")
            else:
                click.echo(f"{c['file']}: BROKEN at record {c['broken_at']}: {c['reason']}")
                click.echo(f"{c['file']}: the {c['records']} records before it are intact (head {c['head']}); "
                           f"{c['rows']} rows in all, in {segs}")
    sys.exit(0 if ok else 1)


def _verify_logs(sources: list[str], as_json: bool) -> None:
    from ..trail import verify_sources

    started = time.perf_counter()
    chains = verify_sources(sources)
    ok = all(c["ok"] for c in chains)
    if as_json:
        click.echo(json.dumps({"ok": ok, "chains": chains, "seconds": round(time.perf_counter() - started, 6)}))
    else:
        for c in chains:
            if c["ok"]:
                click.echo(f"{c['file']}: ok: {c['records']} records, chain intact; head {c['head']}")
            elif c["broken_at"] is None:  # nothing was read: no file, no table, no connection
                click.echo(f"{c['file']}: UNREADABLE: {c['reason']}")
            else:
                click.echo(f"{c['file']}: BROKEN at record {c['broken_at']}: {c['reason']}")
                click.echo(f"{c['file']}: the {c['records']} records before it are intact (head {c['head']}); "
                           f"{c['rows']} rows in all")
    sys.exit(0 if ok else 1)


@audit_group.command("trace")
@click.argument("cti")
@click.option("--log", "logs", multiple=True, required=True, metavar="FILE|DIR|DSN",
              help="A log to search and verify: the issuer's data directory (or one of its chain files), a "
                   "service's log file, or a PostgreSQL DSN (crumb.log). Repeatable: one per hop.")
@click.option("--key", "key_files", multiple=True, required=True, metavar="FILE",
              help="The issuer's public key file (repeatable, e.g. after a rotation): the recorded tokens' "
                   "signatures are checked with it.")
@click.option("--node-key", "node_files", multiple=True, metavar="FILE",
              help="A hop's public key file, for tokens that name their hops by kid (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_trace(cti, logs, key_files, node_files, as_json) -> None:
    """Follow token CTI (hex) from its issuance through every hop's log; exit 1 if anything does not hold.

    Every log is verified whole; each hop's record of the token is checked
    offline (the issuer's signature and every attestation it carried, as at
    the record's time); a declared hop without a record is named as the
    missing link.
    """
    from ..keys import load_public_key
    from ..trail import render, trace

    try:
        bytes.fromhex(cti)
    except ValueError:
        raise click.UsageError(f"CTI {cti!r}: the token id in hex (as `crumb inspect` and the logs show it)") from None
    try:
        keys = [load_public_key(f) for f in key_files]
        nodes = [load_public_key(f) for f in node_files]
    except (OSError, ValueError) as e:
        _setup_error(f"cannot read a key: {e}")
    result = trace(cti, list(logs), keys, nodes)
    click.echo(json.dumps(result) if as_json else render(result))
    sys.exit(0 if result["ok"] else 1)


@audit_group.command("archive")
@_data_option
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False),
              help="The archive directory (created if missing); segments already there are checked, not copied.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_archive(data_dir, dest, as_json) -> None:
    """Copy every closed segment of every chain to an archive directory, then verify the archive on its own.

    Exit 1 if the archive does not verify or disagrees with the data directory.
    """
    from .archive import ArchiveError, archive

    data = DataDir(data_dir)
    paths = data.audit_logs()
    if not paths:
        _setup_error(f"no audit log in {data.root}")
    try:
        results = [archive(path, Path(dest)) for path in paths]
    except ArchiveError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    ok = all(r["ok"] or not r["segments"] for r in results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "chains": results}))
    else:
        for r in results:
            if not r["segments"]:
                click.echo(f"{r['chain']}: no closed segment yet (nothing archived)")
            elif r["ok"]:
                click.echo(f"{r['chain']}: archived {len(r['copied'])} new segment(s); the archive holds "
                           f"{r['segments']} segment(s), {r['records']} records, verified; head {r['head']}")
            else:
                click.echo(f"{r['chain']}: ARCHIVE BROKEN: {r['reason']}")
    sys.exit(0 if ok else 1)


@audit_group.command("prune")
@_data_option
@click.option("--archive", "archive_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The archive directory: only segments it holds, identical, are deleted.")
@click.option("--keep", default=2, show_default=True, type=click.IntRange(1, None),
              help="Segments to keep in the data directory, the one being written included.")
@click.option("--keep-days", default=0.0, show_default=True, type=click.FloatRange(0, None),
              help="Keep every segment whose last record is younger than this many days.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_prune(data_dir, archive_dir, keep, keep_days, as_json) -> None:
    """Delete the oldest archived segments beyond the retention, leaving an anchor the rest verifies from."""
    from .archive import ArchiveError, prune

    data = DataDir(data_dir)
    paths = data.audit_logs()
    if not paths:
        _setup_error(f"no audit log in {data.root}")
    try:
        results = [prune(path, Path(archive_dir), keep=keep, keep_days=keep_days) for path in paths]
    except ArchiveError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"chains": results}))
    else:
        for r in results:
            if r["deleted"]:
                a = r["anchor"]
                click.echo(f"{r['chain']}: deleted {', '.join(r['deleted'])}; the chain here continues from "
                           f"record {a['seq']} (head {a['hash']}), as the archive ends")
            else:
                click.echo(f"{r['chain']}: nothing to delete")


@audit_group.command("tail")
@_data_option
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100_000), help="Records to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records.")
@click.option("--json", "as_json", is_flag=True, help="Print each record's JSON body.")
def audit_tail(data_dir, count, follow, as_json) -> None:
    """Show the latest records readably (all chains, in time order)."""
    from . import audit

    data = DataDir(data_dir)
    paths = data.audit_logs()
    if not paths:
        _setup_error(f"no audit log in {data.root}")
    several = len(paths) > 1

    def show(path, rec) -> str:
        line = rec.text if as_json else audit.describe(rec)
        return f"{path.stem:<9}{line}" if several and not as_json else line

    def when(item) -> tuple:
        try:
            return (item[1].data.get("t", 0), item[1].seq)
        except ValueError:
            return (0, item[1].seq)

    # The rows verify reads (every row, whatever its number), newest first; then, with
    # --follow, the rows numbered after the last one shown.
    seen: dict = {}
    recent = []
    for path in paths:
        for rec in audit.last(path, count):
            recent.append((path, rec))
            seen[path] = max(seen.get(path, rec.seq), rec.seq)
    for path, rec in sorted(recent, key=when)[-count:]:
        click.echo(show(path, rec))
    while follow:
        time.sleep(0.5)
        new = []
        for path in data.audit_logs():
            for rec in audit.records(path, after=seen.get(path)):
                new.append((path, rec))
                seen[path] = rec.seq
        for path, rec in sorted(new, key=when):
            click.echo(show(path, rec))


COMMANDS = (issuer_group, policy_group, keys_group, device_group, audit_group)
