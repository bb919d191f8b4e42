"""The main job, for now: one token through a two-hop chain, every step printed.

    python -m crumb.demo

An issuer mints a single-use token for dev-0001 to read /sensors/temp01 and
declares the chain gateway → ingest. Each hop verifies offline and attests;
the storage service at the end verifies the whole chain. Then the attacks
the format stops: replay, a skipped hop, a token shown to the wrong service,
a flipped bit.
"""

from __future__ import annotations

import sys

from rich.console import Console

from . import SigningKey, Verifier, attest, mint
from .errors import CrumbError
from .inspect import inspect, render
from .token import to_text

RES, OP = "/sensors/temp01", "read"


def main() -> int:
    out = Console(highlight=False)
    step = 0

    def say(title: str) -> None:
        nonlocal step
        step += 1
        out.print(f"\n[bold cyan]{step}. {title}[/]")

    def rejected(what: str, fn) -> bool:
        try:
            fn()
        except CrumbError as e:
            out.print(f"   {what}: [red]rejected[/] — [bold]{e.code}[/]: {e.message}")
            return True
        out.print(f"   {what}: [bold red]ACCEPTED — this is a bug[/]")
        return False

    say("Keys: the issuer and two service nodes generate Ed25519 keys")
    issuer, gateway, ingest = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    for name, key in (("issuer", issuer), ("gateway", gateway), ("ingest", ingest)):
        out.print(f"   {name:8} kid {key.kid.hex()}")

    say(f"Mint: dev-0001 may '{OP}' {RES}, once, for 60 s, via gateway → ingest")
    token = mint(issuer, sub="dev-0001", scope=[(RES, OP)], ttl=60, uses=1,
                 chain=[("gateway", gateway.public), ("ingest", ingest.public)])
    out.print(f"   {len(token)} bytes of CBOR; as a bearer header:")
    out.print(f"   Authorization: Bearer {to_text(token)}", soft_wrap=True)

    say("Gateway (hop 1) verifies offline with only the issuer's public key, then attests")
    v = Verifier([issuer.public], hop="gateway").verify(token, RES, OP)
    out.print(f"   [green]accepted[/]: sub={v.claims.sub} scope={v.claims.scope}")
    token = attest(token, gateway, "gateway")
    out.print(f"   attested: token is now {len(token)} bytes")

    say("Ingest (hop 2) verifies that the gateway attested, then attests")
    Verifier([issuer.public], hop="ingest").verify(token, RES, OP)
    out.print("   [green]accepted[/]")
    token = attest(token, ingest, "ingest")
    out.print(f"   attested: token is now {len(token)} bytes")

    say("Storage (the destination) verifies the full chain")
    storage = Verifier([issuer.public])
    v = storage.verify(token, RES, OP)
    out.print(f"   [green]accepted[/]: passed through {' → '.join(v.attested)}")

    say("What the token holds (crumb inspect)")
    for line in render(inspect(token)).splitlines():
        out.print(f"   {line}", soft_wrap=True)

    say("Attacks")
    ok = all([
        rejected("same token again at storage", lambda: storage.verify(token, RES, OP)),
        rejected("skip the gateway", lambda: Verifier([issuer.public], hop="ingest").verify(
            mint(issuer, sub="dev-0001", scope=[(RES, OP)],
                 chain=[("gateway", gateway.public), ("ingest", ingest.public)]), RES, OP)),
        rejected("back to the gateway after the chain", lambda: Verifier([issuer.public], hop="gateway").verify(token, RES, OP)),
        rejected("a service outside the chain", lambda: Verifier([issuer.public], hop="billing").verify(token, RES, OP)),
        rejected("another operation", lambda: Verifier([issuer.public]).verify(token, RES, "write")),
        rejected("one flipped bit", lambda: Verifier([issuer.public]).verify(
            token[:40] + bytes([token[40] ^ 1]) + token[41:], RES, OP)),
    ])
    out.print("\n[bold green]demo complete[/]" if ok else "\n[bold red]demo found a bug[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
