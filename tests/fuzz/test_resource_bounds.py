"""No input makes a verification or a token request take unbounded steps or memory.

Each test builds the worst inputs we can (the most blocks, caveats, hops,
scope entries and tokens the limits allow; the largest inputs; hostile
declared lengths and nesting) and measures them against a typical input in
the same process: steps as function calls (sys.setprofile, Python and C
calls alike), memory as tracemalloc's peak during the call. Both are counts,
so the ratios are the same on any machine; no wall time is measured.
docs/hardening.md lists the bounds and why they hold.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from crumb import MemoryReplayStore, Verifier, attenuate, attenuate_open, attest, caveat, mint, seal
from crumb.errors import CrumbError
from crumb.issuer.protocol import build_json_request, build_request
from crumb.tooling.fuzz import fixtures as fx
from crumb.tooling.fuzz.harness import CallCounter
from crumb.tooling.fuzz.issuer_targets import ENDPOINT_POLICY, Endpoint
from crumb.wire import MAX_BATCH, MAX_BLOCKS, MAX_CAVEATS, MAX_ITEMS, MAX_PERMISSION_OPS, MAX_TOKEN_BYTES

# The bounds (docs/hardening.md, "Resource bounds"), as ratios to a typical input.
VERIFY_CALLS = 128          # the most caveats and blocks a token can carry
VERIFY_MEMORY = 32
REJECTED_CALLS = 2          # a token refused on its bytes costs no more than a good one
REJECTED_MEMORY = 2
REQUEST_CALLS_PER_TOKEN = 3  # a request for n tokens: at most 3n times a one-token request
REQUEST_MEMORY_PER_TOKEN = 1
REFUSED_CALLS = 2           # a refused request of any size: at most twice a one-token request
REFUSED_MEMORY = 16         # (a 2 KiB JSON nesting holds ~10x the memory of a small request)


class Cost:
    """Calls, signature checks and peak memory of one call of ``fn``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        counter = CallCounter()
        checks = [0]

        def profile(frame: Any, event: str, arg: Any) -> None:
            counter._profile(frame, event, arg)
            if event == "c_call" and getattr(arg, "__name__", "") == "crypto_sign_open":
                checks[0] += 1

        import sys

        sys.setprofile(profile)
        try:
            self.result = fn()
        finally:
            sys.setprofile(None)
        self.calls = counter.calls
        self.signature_checks = checks[0]
        tracemalloc.start()
        try:
            fn()
        finally:
            self.memory = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


# -- verification ---------------------------------------------------------------------

NODES = [fx.fixed_key(f"bounds-node-{i}") for i in range(MAX_BLOCKS)]
IAT = fx.NOW - 10


def _verify(token: bytes) -> Callable[[], str]:
    def run() -> str:
        clock = lambda: fx.NOW
        verifier = Verifier([fx.ISSUER.public], node_keys=[k.public for k in NODES], clock=clock,
                            replay=MemoryReplayStore(fence=False, clock=clock))
        try:
            verifier.verify(token, "/sensors/temp01", "read")
        except CrumbError as e:
            return e.code
        return "ok"

    return run


def _worst_tokens() -> dict[str, bytes]:
    scope = [("/sensors/*", "read")]
    out = {}
    chained = mint(fx.ISSUER, scope=scope, sub=fx.DEVICE_ID, now=IAT,
                   chain=[(f"hop{i:02d}", k.public) for i, k in enumerate(NODES)])
    for i, key in enumerate(NODES):
        chained = attest(chained, key, f"hop{i:02d}")
    out["chain of 16 hops, all attested"] = chained
    # The most caveats: MAX_CAVEATS in the authority and in each of MAX_BLOCKS attenuation blocks.
    cheap = [caveat("prefix", "resource", "/")] * MAX_CAVEATS
    most = mint(fx.ISSUER, scope=scope, sub=fx.DEVICE_ID, now=IAT, hop_refs="kid", caveats=cheap,
                attenuators=[(f"{i}", k.public) for i, k in enumerate(NODES)])
    for key in NODES:
        most = attenuate(most, key, cheap)
    out["272 caveats in 17 blocks"] = most
    wide = ["/sensors/temp01"] + [f"/s/{i:02d}" for i in range(MAX_ITEMS - 1)]
    lists = mint(fx.ISSUER, scope=scope, sub=fx.DEVICE_ID, now=IAT, hop_refs="kid",
                 attenuators=[(f"{i}", k.public) for i, k in enumerate(NODES[:6])],
                 caveats=[caveat("in", "resource", wide[:8])] * 4)
    for key in NODES[:6]:
        lists = attenuate(lists, key, [caveat("in", "resource", wide[:10])] * 5)
    out["'in' caveats over long lists"] = lists
    opened = mint(fx.ISSUER, scope=scope, sub=fx.DEVICE_ID, now=IAT, open=fx.EPHEMERAL[0])
    for _ in range(MAX_BLOCKS - 1):
        opened = attenuate_open(opened, [caveat("prefix", "resource", "/sensors/")])
    out["open chain of 15 blocks, sealed"] = seal(opened)
    widest = None
    for n in range(1, MAX_ITEMS + 1):  # as many scope entries as the scope claim holds
        entries = [(f"/{i:02d}", ["r", "w"]) for i in range(n - 1)] + [("/sensors/temp01", "read")]
        try:
            widest = mint(fx.ISSUER, scope=entries, sub=fx.DEVICE_ID, now=IAT)
        except CrumbError:
            break
    assert widest is not None
    out["widest scope"] = widest
    for name, token in out.items():
        assert _verify(token)() == "ok", name
        assert len(token) <= MAX_TOKEN_BYTES, name
    return out


def _hostile_tokens() -> dict[str, bytes]:
    n = MAX_TOKEN_BYTES
    return {
        "a 2^64-byte string declared": bytes([0x82, 0x02, 0x84, 0x5B]) + b"\xff" * 8 + bytes(n - 12),
        "nesting as deep as the size allows": b"\x81" * n,
        "indefinite arrays as deep as the size allows": b"\x9f" * n,
        "a map declaring 2^32 entries": bytes([0x82, 0x02, 0x84, 0x41, 0xBA]) + b"\xff" * 4 + bytes(n - 9),
        "max-size noise": bytes((i * 131 + 7) % 256 for i in range(n)),
        "64 times the size limit": bytes(n * 64),
    }


@pytest.fixture(scope="module")
def typical_verify() -> Cost:
    token = fx.valid_tokens()["plain"]
    assert _verify(token)() == "ok"
    return Cost(_verify(token))


def test_worst_tokens_verify_within_the_bounds(typical_verify):
    for name, token in _worst_tokens().items():
        cost = Cost(_verify(token))
        assert cost.result == "ok", name
        assert cost.calls <= VERIFY_CALLS * typical_verify.calls, (name, cost.calls, typical_verify.calls)
        assert cost.memory <= VERIFY_MEMORY * typical_verify.memory, (name, cost.memory, typical_verify.memory)
        # One Ed25519 check per block, plus the seal: never a loop over untrusted counts.
        assert cost.signature_checks <= MAX_BLOCKS + 2, (name, cost.signature_checks)


def test_hostile_tokens_are_refused_within_the_bounds(typical_verify):
    for name, token in _hostile_tokens().items():
        cost = Cost(_verify(token))
        assert cost.result in ("malformed", "too_large"), (name, cost.result)
        assert cost.calls <= REJECTED_CALLS * typical_verify.calls, (name, cost.calls, typical_verify.calls)
        assert cost.memory <= REJECTED_MEMORY * typical_verify.memory, (name, cost.memory, typical_verify.memory)
        assert cost.signature_checks == 0, name


def test_the_bounds_are_not_vacuous(typical_verify):
    """The worst tokens do cost far more than a typical one: the measure sees the work."""
    costs = [Cost(_verify(t)).calls for t in _worst_tokens().values()]
    assert max(costs) >= 20 * typical_verify.calls
    assert typical_verify.signature_checks == 1


# -- token requests -------------------------------------------------------------------

OPS = ["read", "publish", "a", "b", "c", "d", "e", "f"][:MAX_PERMISSION_OPS]
BOUNDS_POLICY = (ENDPOINT_POLICY.replace("batch = 16", f"batch = {MAX_BATCH}")
                 .replace('operations = ["read", "publish"]', f"operations = {OPS!r}".replace("'", '"')))
CBOR = [(b"content-type", b"application/ace+cbor")]
JSON = [(b"content-type", b"application/json")]


@pytest.fixture(scope="module")
def endpoint():
    e = Endpoint(BOUNDS_POLICY)
    yield e
    e.close()


def _post(endpoint: Endpoint, headers: list, body: bytes) -> Cost:
    endpoint.post(headers, body)  # once before: caches (policy profile, lanes) are warm for both
    request = endpoint.request(headers, body)
    return Cost(lambda: endpoint.answer(request)[0])


def _cbor(endpoint: Endpoint, scopes: list, **kw: Any) -> bytes:
    return endpoint.remac(CBOR, build_request(fx.DEVICE_ID, bytes(32), scopes, nonce=b"\x01" * 6, now=fx.NOW, **kw))


def test_requests_for_many_tokens_cost_at_most_their_count(endpoint):
    typical = _post(endpoint, CBOR, _cbor(endpoint, [("/sensors/temp01", "read")]))
    assert typical.result == 200
    json_batch = build_json_request(fx.DEVICE_ID, bytes(32), [(f"/sensors/{i:02d}", "read") for i in range(MAX_BATCH)],
                                    nonce=b"\x01" * 6, now=fx.NOW)
    cases = {
        "32 scopes of 8 operations": (CBOR, _cbor(endpoint, [(f"/sensors/{i:02d}" + "x" * 20, OPS)
                                                             for i in range(MAX_BATCH)]), MAX_BATCH),
        "32 tokens of one scope": (CBOR, _cbor(endpoint, [("/sensors/temp01", "read")], count=MAX_BATCH), MAX_BATCH),
        "32 scopes in JSON": (JSON, endpoint.remac(JSON, json_batch), MAX_BATCH),
    }
    most = 0
    for name, (headers, body, n) in cases.items():
        assert len(body) <= 2048, name  # within the policy's request size limit
        cost = _post(endpoint, headers, body)
        most = max(most, cost.calls)
        assert cost.result == 200, name
        assert cost.calls <= REQUEST_CALLS_PER_TOKEN * n * typical.calls, (name, cost.calls, typical.calls)
        assert cost.memory <= REQUEST_MEMORY_PER_TOKEN * n * typical.memory, (name, cost.memory, typical.memory)
    assert most >= 10 * typical.calls  # not vacuous: 32 tokens are measurably more work


def test_refused_requests_cost_no_more_than_a_token(endpoint):
    typical = _post(endpoint, CBOR, _cbor(endpoint, [("/sensors/temp01", "read")]))
    limit = 2048
    cases = {
        "JSON nested as deep as the size allows": (JSON, b"[" * limit, 400),
        "a JSON string filling the body": (JSON, b'{"a":"' + b"x" * (limit - 8) + b'"}', 400),
        "CBOR noise filling the body": (CBOR, bytes((i * 131 + 7) % 256 for i in range(limit)), 400),
        "a 2^64-byte scope declared": (CBOR, b"\xa3\x09\x7b" + b"\xff" * 8 + bytes(limit - 11), 400),
        "a body 500 times the limit, declared": (CBOR + [(b"content-length", b"%d" % (limit * 500))],
                                                 bytes(limit * 500), 413),
        "a body 500 times the limit, streamed": (CBOR, bytes(limit * 500), 413),
        "one scope more than a batch holds": (CBOR, _cbor(endpoint, [(f"/sensors/{i}", "read")
                                                                   for i in range(MAX_BATCH + 1)]), 400),
    }
    for name, (headers, body, status) in cases.items():
        cost = _post(endpoint, headers, body)
        assert cost.result == status, (name, cost.result)
        assert cost.calls <= REFUSED_CALLS * typical.calls, (name, cost.calls, typical.calls)
        assert cost.memory <= REFUSED_MEMORY * typical.memory, (name, cost.memory, typical.memory)
