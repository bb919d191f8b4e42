"""No request body, however it is built, gets a 500 or reaches the issuer's catch-all: only typed refusals.

The whole pipeline runs (Issuer.token: parsing, the MAC, the gate, the
policy, minting, the audit record, the answer's encoding) on bodies drawn
wide: JSON with lone surrogates, huge and negative numbers, floats, nested
values where text belongs; CBOR maps with the same (where CBOR can carry
them); the device's own request shape mutated; arbitrary bytes. Most carry a
correct MAC for an enrolled device, so they get past authentication and
reach the policy, the mint and the audit log, where an odd value that
slipped through parsing would first be encoded.

Issuer.token catches any exception as ``internal_error`` (a bug: HTTP 500);
the metric of that code counts every time it did. It must stay at zero.
"""

from __future__ import annotations

import asyncio
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crumb import cbor
from crumb.issuer import protocol
from crumb.issuer.app import Settings, build_issuer
from crumb.issuer.codes import CODES
from crumb.issuer.datadir import DataDir
from crumb.issuer.protocol import crumb_block, derive_device_key, mac_of, parse_response
from crumb.keys import b64u

from .policies import node
from .test_differential import ODD, device_requests, odd_text

NOW = 1_800_000_000
DEVICES = ("dev-0001", "d", "x" * 64)  # the ids test_differential's device requests use
OPS = ["read", "w", "r", "GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "IPATCH", "x" * 200, "é", 'q"\\',
       "\u2028", "\x01", "a b", "a|b", "a,b"]

FUZZ_POLICY = f"""
[issuer]
name = "crumb-fuzz"
max_skew = 3600
hop_refs = "kid"

[defaults]
ttl = 60
batch = 32
rate = 1000000.0
burst = 1000000

[nodes]
gateway = "{node('gateway')}"
ingest = "{node('ingest')}"

[groups.fuzz]
[[groups.fuzz.allow]]
resource = "/chained/*"
operations = ["read", "publish"]
chain = ["gateway", "ingest"]
attenuators = ["ingest"]
audience = "aud"
uses = 3

[[groups.fuzz.allow]]
resources = ["/*", "sensors/*"]
operations = {json.dumps(OPS)}
"""

# Values that do not belong anywhere in a request, for any field.
WILD = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(allow_nan=True), odd_text(0, 12),
              st.sampled_from([2**64 - 1, 2**64, 2**64 + 1, 2**70, -1, 0, 128, 127])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(odd_text(0, 6), inner, max_size=3)),
    max_leaves=8)

# Resources and operations a policy can allow, and odd ones: lone surrogates, non-canonical, too long.
# (The policy allows neither "*" nor "other/x": past the MAC, they are scope_denied.)
GOOD_RESOURCES = st.sampled_from(["/sensors/t", "/a/*", "/chained/x", "/", "sensors/t1", "/é/ü", "/" + "y" * 200,
                                  "*", "other/x"])
ODD_RESOURCES = st.one_of(odd_text(0, 20).map(lambda t: "/" + t), odd_text(0, 20),
                          st.sampled_from(["/sensors/../valves/1", "/a//b", "/a/", "/a%2e", "/a\\b", "/\ud800",
                                           "/" + "é" * 128, "/" + "y" * 254]))
GOOD_OPS = st.sampled_from(OPS)
ODD_OPS = st.one_of(odd_text(0, 12), st.just("z" * 255))
GOOD_PERMS = st.one_of(GOOD_OPS, st.lists(GOOD_OPS, min_size=2, max_size=4, unique=True), st.integers(1, 127))
ODD_PERMS = st.one_of(ODD_OPS, st.lists(st.one_of(GOOD_OPS, ODD_OPS, WILD), min_size=0, max_size=9),
                      st.integers(-2**80, 2**80), st.sampled_from([0, 128, 2**64 - 1, 2**64, 2**70]), WILD)
FIELDS = ["client_id", "scope", "resource", "perm", "audience", "grant_type", "ace_profile", "nonce", "time",
          "count", "extra", "mac"]


@st.composite
def json_requests(draw) -> bytes:
    """A JSON request: good values but for one field drawn wide (or several, or none), the MAC right when it can be."""
    pick = draw(st.sampled_from(["none", "none", "none", "all", *FIELDS]))
    odd = lambda field: pick == field or (pick == "all" and draw(st.booleans()))

    def entry() -> tuple:
        return (draw(ODD_RESOURCES if odd("resource") else GOOD_RESOURCES),
                draw(ODD_PERMS if odd("perm") else GOOD_PERMS))

    entries = [entry() for _ in range(draw(st.integers(0 if odd("scope") else 1, 4)))]
    device = draw(st.sampled_from(DEVICES))
    doc: dict = {"client_id": draw(WILD) if odd("client_id") else device}
    if odd("scope") and draw(st.booleans()):
        doc["scope"] = draw(WILD)
    elif all(isinstance(r, str) and isinstance(p, (str, list)) and all(isinstance(o, str) for o in
                                                                        ([p] if isinstance(p, str) else p))
             for r, p in entries) and draw(st.booleans()):  # the text form, when it can say it (or nearly)
        doc["scope"] = " ".join(f"{r}|{p if isinstance(p, str) else ','.join(p)}" for r, p in entries)
    else:
        doc["scope"] = [[r, p] for r, p in entries]
    if odd("audience") or draw(st.integers(0, 3)) == 0:
        doc["audience"] = draw(st.one_of(WILD, odd_text(0, 10), st.just(""))) if odd("audience") else "aud"
    if odd("grant_type") or draw(st.integers(0, 3)) == 0:
        doc["grant_type"] = draw(WILD) if odd("grant_type") else "client_credentials"
    if odd("ace_profile") or draw(st.integers(0, 3)) == 0:
        doc["ace_profile"] = draw(WILD) if odd("ace_profile") else None
    nonce = os.urandom(draw(st.sampled_from([6, 8, 16, 3, 20]) if odd("nonce") else st.sampled_from([6, 8, 16])))
    doc["nonce"] = draw(WILD) if odd("nonce") and draw(st.booleans()) else b64u(nonce)
    doc["time"] = draw(st.one_of(WILD, st.integers(0, 2**32 - 1))) if odd("time") else NOW
    if odd("count"):
        doc["count"] = draw(st.one_of(WILD, st.integers(0, 40)))
    elif len(entries) == 1 and draw(st.integers(0, 3)) == 0:
        doc["count"] = draw(st.integers(1, 4))
    if odd("extra"):
        doc[draw(odd_text(0, 8))] = draw(WILD)
    doc["mac"] = b64u(_json_mac(doc, device) or os.urandom(16))
    if odd("mac"):
        doc["mac"] = draw(st.one_of(WILD, st.binary(min_size=16, max_size=16).map(b64u)))
    return json.dumps(doc).encode()  # lone surrogates go out as \ud800, as any JSON encoder writes them


def _json_mac(doc: dict, device: str) -> bytes | None:
    """The MAC over the CBOR of the same request (PROTOCOL.md §11.7), or None where there is none."""
    try:
        scope = doc["scope"]
        scope = scope if isinstance(scope, str) else protocol.aif_scope([(r, p) for r, p in scope])
        block = crumb_block(doc["time"], doc.get("count", 1), protocol.unb64u(doc["nonce"]))
        body = protocol._request_map(doc["client_id"], scope, doc.get("audience"), "grant_type" in doc,
                                     "ace_profile" in doc, block)
    except Exception:  # noqa: BLE001 -- a request nothing can encode has no right MAC: a random one goes
        return None
    return mac_of(KEYS[device], body[:-16])


@st.composite
def cbor_requests(draw) -> bytes:
    """A CBOR request map, one field drawn wide (what CBOR can carry: no lone surrogates), the MAC right."""
    text = odd_text(0, 20).map(lambda t: t.encode("utf-8", "replace").decode())  # st.characters() has surrogates
    leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64 - 1), st.binary(max_size=12), text)
    value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.integers(-5, 40), inner, max_size=3)),
                         max_leaves=6)
    pick = draw(st.sampled_from(["none", "none", "none", "all", *FIELDS]))
    odd = lambda field: pick == field or (pick == "all" and draw(st.booleans()))
    resource = st.one_of(ODD_RESOURCES.map(lambda t: t.encode("utf-8", "replace").decode()), value)
    perm = st.one_of(ODD_PERMS.filter(lambda p: isinstance(p, int) and -2**64 <= p < 2**64), ODD_OPS.map(
        lambda t: t.encode("utf-8", "replace").decode()), st.lists(st.one_of(GOOD_OPS, text), max_size=9), value)
    entries = [[draw(resource if odd("resource") else GOOD_RESOURCES), draw(perm if odd("perm") else GOOD_PERMS)]
               for _ in range(draw(st.integers(0 if odd("scope") else 1, 4)))]
    device = draw(st.sampled_from(DEVICES))
    if odd("scope"):
        scope = draw(st.one_of(value, text.map(lambda t: t + "|read"), st.just(cbor.dumps(entries))))
    elif draw(st.booleans()) and all(isinstance(p, str) for _, p in entries):
        scope = " ".join(f"{r}|{p}" for r, p in entries)
    else:
        scope = cbor.dumps(entries)
    m: dict = {24: draw(value) if odd("client_id") else device, 9: scope}
    if odd("audience") or draw(st.integers(0, 3)) == 0:
        m[5] = draw(st.one_of(text, value)) if odd("audience") else "aud"
    if odd("grant_type") or draw(st.integers(0, 3)) == 0:
        m[33] = draw(value) if odd("grant_type") else 2
    if odd("ace_profile") or draw(st.integers(0, 3)) == 0:
        m[38] = draw(value) if odd("ace_profile") else None
    if odd("extra"):
        m[draw(st.integers(-70_000, 70_000))] = draw(value)
    count = draw(st.integers(0, 40)) if odd("count") else 1 if len(entries) != 1 else draw(st.integers(1, 4))
    block = crumb_block(draw(st.integers(0, 2**32 - 1)) if odd("time") else NOW, count,
                        os.urandom(draw(st.sampled_from([6, 8, 16]))))
    m[-65537] = draw(value) if odd("nonce") else block
    body = _remac(cbor.dumps(m), device)
    return body[:-1] + bytes((body[-1] ^ 1,)) if odd("mac") else body


def _remac(body: bytes, device: str) -> bytes:
    # The MAC is a request's last 16 bytes: make them right, whatever came before.
    return body[:-16] + mac_of(KEYS[device], body[:-16]) if len(body) > 16 else body


def _device_request(body: bytes) -> bytes:
    device = next((d for d in DEVICES[::-1] if d.encode() in body), DEVICES[0])
    return _remac(body, device)


KEYS: dict[str, bytes] = {}
BODIES = st.one_of(
    json_requests().map(lambda b: (b, "json")),
    cbor_requests().map(lambda b: (b, "cbor")),
    device_requests().map(lambda b: (_device_request(b), "cbor")),
    st.tuples(st.binary(max_size=120), st.sampled_from(["cbor", "json"])),
    st.tuples(st.sampled_from(ODD), st.sampled_from(["cbor", "json"])).map(lambda t: (t[0].encode("utf-8",
                                                                                                   "surrogatepass"), t[1])),
)


def test_no_body_reaches_the_catch_all(tmp_path):
    (tmp_path / "p.toml").write_text(FUZZ_POLICY)
    issuer = build_issuer(Settings(DataDir(tmp_path / "data"), tmp_path / "p.toml", audit_sync="NORMAL"))
    for device in DEVICES:
        issuer.registry.add(device, "fuzz")
        KEYS[device] = derive_device_key(issuer.macs.master, device)
    issuer.clock = lambda: NOW + 0.25
    loop = asyncio.new_event_loop()

    async def start() -> None:
        issuer.audit.start()

    loop.run_until_complete(start())
    seen: dict[tuple[str, str], int] = {}

    @settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])
    @given(BODIES)
    def check(case: tuple[bytes, str]) -> None:
        body, fmt = case
        issuer.metrics.refusals.pop("internal_error", None)  # counted per example, so shrinking finds the one
        status, answer, _ = loop.run_until_complete(issuer.token(body, fmt, "192.0.2.1"))
        assert "internal_error" not in issuer.metrics.refusals, (body, fmt, answer)
        assert status < 500, (body, fmt, status, answer)
        resp = parse_response(answer, "application/json" if fmt == "json" else "application/ace+cbor")
        assert resp.ok == (status == 200) and (resp.ok or resp.code in CODES), resp
        if resp.ok:
            assert resp.tokens
        key = (fmt, resp.code or "issued")
        seen[key] = seen.get(key, 0) + 1

    try:
        check()
    finally:
        loop.run_until_complete(issuer.audit.stop())
        loop.close()
        issuer.registry.close()
    # Not vacuous: bodies got past the MAC to the policy, the mint and the audit log, in both formats.
    for fmt in ("json", "cbor"):
        assert seen.get((fmt, "issued"), 0) > 100 and seen.get((fmt, "malformed"), 0) > 100, seen
        assert {(fmt, "scope_denied"), (fmt, "bad_mac")} <= set(seen), seen
