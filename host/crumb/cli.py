"""The `crumb` command line. Exit codes: 0 ok, 1 token rejected, 2 usage or setup error."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from . import caveats as cav
from .errors import CrumbError
from .keys import KeyFileError, PublicKey, SigningKey, generate, load_public_key, load_signing_key, save
from .replay import DEFAULT_LEEWAY
from .token import attenuate, attenuate_open, attest, mint, seal, to_text


def _fail(err: CrumbError | str, code: int = 1) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(code)


def _read_token(token: str) -> str:
    if token == "-":
        token = sys.stdin.read()
    return token.strip()


def _signing_key(path: str) -> SigningKey:
    try:
        return load_signing_key(path)
    except KeyFileError as e:
        raise click.UsageError(str(e)) from None


def _public_key(path: str) -> PublicKey:
    try:
        return load_public_key(path)
    except KeyFileError as e:
        raise click.UsageError(str(e)) from None


def _named_keys(values: tuple[str, ...], option: str) -> list:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.UsageError(f"{option} takes NAME=PUBKEYPATH, got {value!r}")
        out.append((name, _public_key(path)))
    return out


def _value(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _caveats(values: tuple[str, ...]) -> list:
    out = []
    for value in values:
        parts = value.split(None, 2)
        if len(parts) != 3:
            raise click.UsageError(f"--caveat takes 'PREDICATE FIELD VALUE', got {value!r}")
        pred, field, raw = parts
        arg = [_value(v) for v in raw.split(",")] if pred == "in" else _value(raw)
        try:
            out.append(cav.make(pred, field, arg))
        except (ValueError, CrumbError) as e:
            raise click.UsageError(f"--caveat {value!r}: {e}") from None
    return out


_CAVEAT_HELP = ("Caveat 'PREDICATE FIELD VALUE' (repeatable). Predicates: eq ne in prefix lt le gt ge; "
                "fields: resource operation time hop audience subject, or any other name for an "
                "application fact. 'in' takes comma-separated values.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crumb")
def main() -> None:
    """crumb: request-time, offline-verifiable authorization tokens.

    Tokens are printed and read as base64url text (no padding). A TOKEN
    argument of '-' reads the token from standard input.
    """


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing key file.")
def keygen(path: str, force: bool) -> None:
    """Write a new Ed25519 private key to PATH (0600) and its public key to PATH.pub; print the kid."""
    if Path(path).exists() and not force:
        raise click.UsageError(f"{path} exists (use --force to overwrite)")
    key = generate()
    save(key, path)
    click.echo(key.kid.hex())


@main.command("mint")
@click.option("--key", "key_path", required=True, help="Issuer private key file.")
@click.option("--sub", help="Subject (device id).")
@click.option("--res", "resource", required=True, help="Resource (a trailing * makes a prefix pattern).")
@click.option("--op", "ops", required=True, multiple=True, help="Operation (repeatable).")
@click.option("--ttl", default=60, show_default=True, type=click.IntRange(min=1), help="Lifetime in seconds.")
@click.option("--uses", default=1, show_default=True, type=click.IntRange(min=1), help="Uses per hop.")
@click.option("--hop", "hops", multiple=True, metavar="NAME=PUBPATH", help="Declare the next hop of the chain (repeatable, in order).")
@click.option("--attenuator", "attenuators", multiple=True, metavar="NAME=PUBPATH", help="Declare a required attenuator (repeatable).")
@click.option("--hop-refs", type=click.Choice(["key", "kid"]), default="key", show_default=True,
              help="Carry hop/attenuator public keys (self-contained) or 4-byte kids (smaller; verifiers need --node-pub).")
@click.option("--caveat", "caveats", multiple=True, help=_CAVEAT_HELP)
@click.option("--aud", help="Audience the token is restricted to.")
@click.option("--iss", help="Issuer name claim.")
@click.option("--open", "open_", is_flag=True, help="Allow attenuation by any holder (proof travels with the token).")
def mint_cmd(key_path: str, sub: str, resource: str, ops: tuple[str, ...], ttl: int, uses: int,
             hops: tuple[str, ...], attenuators: tuple[str, ...], hop_refs: str, caveats: tuple[str, ...],
             aud: str | None, iss: str | None, open_: bool) -> None:
    """Mint a token for one resource and its operations; print it as base64url."""
    key = _signing_key(key_path)
    try:
        token = mint(key, sub=sub, scope=[(resource, list(ops))], ttl=ttl, uses=uses, aud=aud, iss=iss,
                     chain=_named_keys(hops, "--hop"), attenuators=_named_keys(attenuators, "--attenuator"),
                     caveats=_caveats(caveats), hop_refs=hop_refs, open=open_)
    except CrumbError as e:
        raise click.UsageError(e.message) from None
    click.echo(to_text(token))


def _token_op(fn: Callable[..., bytes], *args: Any) -> None:
    try:
        click.echo(to_text(fn(*args)))
    except CrumbError as e:
        _fail(e)


@main.command("attest")
@click.option("--key", "key_path", required=True, help="This node's private key file.")
@click.option("--hop", required=True, help="This node's hop name, as declared in the token.")
@click.argument("token")
def attest_cmd(key_path: str, hop: str, token: str) -> None:
    """Countersign TOKEN as declared hop HOP; print the attested token."""
    _token_op(attest, _read_token(token), _signing_key(key_path), hop)


@main.command("attenuate")
@click.option("--key", "key_path", help="Declared attenuator's private key (omit for an open token).")
@click.option("--caveat", "caveats", multiple=True, required=True, help=_CAVEAT_HELP)
@click.argument("token")
def attenuate_cmd(key_path: str | None, caveats: tuple[str, ...], token: str) -> None:
    """Narrow TOKEN with caveats; print the attenuated token."""
    parsed = _caveats(caveats)
    if key_path:
        _token_op(attenuate, _read_token(token), _signing_key(key_path), parsed)
    else:
        _token_op(attenuate_open, _read_token(token), parsed)


@main.command("seal")
@click.argument("token")
def seal_cmd(token: str) -> None:
    """Seal an open TOKEN so nobody can attenuate it further."""
    _token_op(seal, _read_token(token))


@main.command("verify")
@click.option("--pub", "pubs", required=True, multiple=True, help="Trusted issuer public key file (repeatable).")
@click.option("--res", "resource", required=True, help="Resource of the request.")
@click.option("--op", "operation", required=True, help="Operation of the request.")
@click.option("--hop", help="The declared hop doing this verification (omit at the final destination).")
@click.option("--node-pub", "node_pubs", multiple=True, help="Public key of a hop/attenuator a token names by kid (repeatable).")
@click.option("--aud", help="This service's audience name.")
@click.option("--fact", "facts", multiple=True, metavar="NAME=VALUE", help="Application fact for caveats (repeatable).")
@click.option("--leeway", default=DEFAULT_LEEWAY, show_default=True, type=click.IntRange(min=0),
              help="Clock leeway in seconds, on exp, nbf and iat.")
@click.argument("token")
def verify_cmd(pubs: tuple[str, ...], resource: str, operation: str, hop: str | None, node_pubs: tuple[str, ...],
               aud: str | None, facts: tuple[str, ...], leeway: int, token: str) -> None:
    """Verify TOKEN for one request; print its claims as JSON (exit 0) or the error (exit 1).

    Uses are counted in memory for this one invocation: a single check of a
    token. Services keep a replay store across requests (see README).
    """
    from .replay import MemoryReplayStore
    from .verify import Verifier

    fact_map = {}
    for f in facts:
        name, sep, value = f.partition("=")
        if not sep or not name:
            raise click.UsageError(f"--fact takes NAME=VALUE, got {f!r}")
        fact_map[name] = _value(value)
    verifier = Verifier([_public_key(p) for p in pubs], node_keys=[_public_key(p) for p in node_pubs],
                        replay=MemoryReplayStore(fence=False, leeway=leeway), leeway=leeway, hop=hop, audience=aud)
    try:
        verified = verifier.verify(_read_token(token), resource, operation, facts=fact_map)
    except CrumbError as e:
        _fail(e)
    except Exception as e:  # noqa: BLE001 -- a bug must still not print a traceback at the caller
        _fail(f"malformed: unexpected {type(e).__name__} while verifying (please report)")
    click.echo(json.dumps(verified.to_json(), indent=1))


@main.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.argument("token")
def inspect_cmd(as_json: bool, token: str) -> None:
    """Show every block, claim and signature of TOKEN, verifying nothing."""
    from .inspect import inspect, render

    report = inspect(_read_token(token))
    click.echo(json.dumps(report, indent=1) if as_json else render(report))


@main.group()
def bench() -> None:
    """Benchmarks that print figures (and JSON with --json)."""


@bench.command("tokens")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--rounds", default=2000, show_default=True, type=click.IntRange(min=50), help="Verifications per measurement.")
def bench_tokens(as_json: bool, rounds: int) -> None:
    """Token sizes and verification speed, against raw Ed25519 and peer libraries."""
    from .tooling.bench.tokens import render_table, run

    result = run(rounds=rounds)
    click.echo(json.dumps(result, indent=1) if as_json else render_table(result))


from .issuer.cli import audit_group, device_group, issuer_group, keys_group, policy_group

main.add_command(issuer_group)
main.add_command(policy_group)
main.add_command(keys_group)
main.add_command(device_group)
main.add_command(audit_group)

from .tooling.bench import audit as _bench_audit
from .tooling.bench import device as _bench_device
from .tooling.bench import issuer as _bench_issuer
from .tooling.bench import middleware as _bench_middleware
from .tooling.bench import pg as _bench_pg
from .tooling.bench import replay as _bench_replay

for _bench in (_bench_issuer, _bench_replay, _bench_middleware, _bench_device, _bench_pg, _bench_audit):
    bench.add_command(_bench.command)

from .tooling.sim.cli import command as _sim_command

main.add_command(_sim_command)

from .tooling.firmware.cli import firmware_group

main.add_command(firmware_group)

from .services.pg.cli import pg_group

main.add_command(pg_group)


@main.command("demo")
def demo_cmd() -> None:
    """Walk one device through the chain, step by step: the issuer, its token, three hops, the attacks, the audit log.

    (The main job, a whole fleet with faults and an attacker, is `crumb sim`.)
    """
    from .extras import require

    require("tools", "crumb demo")
    from .tooling.demo import main as demo_main

    sys.exit(demo_main())


if __name__ == "__main__":
    main()
