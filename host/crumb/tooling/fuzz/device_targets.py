"""Targets for the device library on CPython: its CBOR decoder and its handling of issuer answers.

The response target points a real ``ucrumb.client.Client`` at a loopback
server that answers every request with the fuzz input as raw HTTP bytes
(or, for an input not starting with "HTTP/", a status byte and a body), so
the device's own HTTP reader, CBOR decoder, clock sync and cache all run on
it. ``token()`` may raise only the client's typed errors (``IssuerUnavailable``,
``Denied``, ``ClockUnsynced``), and after any answer the client must still be
able to build its next request (an issuer time it adopted must fit the request).
"""

from __future__ import annotations

from collections.abc import Callable

from ... import cbor
from ...wire import (
    ERR_CODE,
    ERR_DESCRIPTION,
    ERR_ERROR,
    ERR_RETRY_AFTER,
    RESP_ACCESS_TOKEN,
    RESP_EXPIRES_IN,
    RESP_TIME,
    RESP_TOKEN_TYPE,
    RESP_TOKENS,
    RESP_USES,
    TOKEN_TYPE_BEARER,
)
from . import fixtures as fx
from .harness import Finding


def _device_cbor_setup() -> Callable[[bytes], None]:
    from ucrumb import cbor as ucbor

    def run(data: bytes) -> None:
        try:
            value = ucbor.loads(data)
        except ucbor.CBORError:
            return
        again = ucbor.dumps(value)
        if again != data:
            raise Finding(f"the device decoded {data.hex()} but its encoder writes {again.hex()}")

    return run


def device_cbor_seeds() -> dict[str, bytes]:
    return {
        "response": cbor.dumps({RESP_ACCESS_TOKEN: b"t" * 40, RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: 1,
                                RESP_TIME: fx.NOW}),
        "batch": cbor.dumps({RESP_TOKEN_TYPE: 1, RESP_TIME: fx.NOW, RESP_TOKENS: [[b"a" * 30, 60, 1], [b"b", 60, 2]]}),
        "refusal": cbor.dumps({ERR_ERROR: 1, ERR_DESCRIPTION: "stale", RESP_TIME: fx.NOW, ERR_CODE: "stale_time"}),
        "envelope": cbor.dumps([fx.valid_tokens()["plain"], b"payload"]),
        "mixed": cbor.dumps({"k": [True, None, -(2 ** 64), "é€𝄞", b"\x00"], 0: {}}),
    }


def _device_response_setup() -> Callable[[bytes], None]:
    from ucrumb import client as uclient

    responder = fx.Responder().start()
    # No backoff (first step 0 ms): every call reaches the server, whatever the previous answer,
    # and no answer depends on how fast the machine is.
    device = {"device_id": fx.DEVICE_ID, "key": b"k" * 32, "batch": 1, "timeout": 10, "backoff": 0,
              "max_backoff": 0}

    def run(data: bytes) -> None:
        responder.response = as_response(data)
        client = uclient.Client(responder.url, **device)
        for resource, operation in (("/sensors/temp01", "read"), ("/sensors/temp02", "publish")):
            try:
                client.token(resource, operation)
            except uclient.CrumbError:
                pass
        try:
            client._request([("/sensors/temp03", "read")], 1)  # what every later token() sends first
        except (OverflowError, ValueError) as e:
            raise Finding(f"after this answer the device cannot build a request: {type(e).__name__}: {e}") from e

    run.close = responder.close  # type: ignore[attr-defined]
    return run


STATUSES = ["200 OK", "400 Bad Request", "401 Unauthorized", "403 Forbidden", "413 Payload Too Large",
            "429 Too Many Requests", "500 Internal Server Error", "503 Service Unavailable"]


def as_response(data: bytes) -> bytes:
    """The HTTP response an input stands for: itself when it starts with "HTTP/", else byte 0
    picks the status and the rest is the body, framed with its Content-Length (so that
    mutations of a CBOR answer are not all lost to a length that no longer matches)."""
    if data.startswith(b"HTTP/") or not data:
        return data
    return _http(STATUSES[data[0] % len(STATUSES)], data[1:])


def _http(status: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/ace+cbor\r\n"
            b"Content-Length: %d\r\n" % len(body) + extra + b"Connection: close\r\n\r\n" + body)


def device_response_seeds() -> dict[str, bytes]:
    token = fx.valid_tokens()["plain"]
    ok = cbor.dumps({RESP_ACCESS_TOKEN: token, RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER,
                     RESP_TIME: fx.NOW})
    uses = cbor.dumps({RESP_ACCESS_TOKEN: token, RESP_EXPIRES_IN: 60, RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER,
                       RESP_TIME: fx.NOW, RESP_USES: 3})
    batch = cbor.dumps({RESP_TOKEN_TYPE: TOKEN_TYPE_BEARER, RESP_TIME: fx.NOW, RESP_TOKENS: [[token, 60, 1]]})

    def refusal(code: str, ace: int = 1, retry: int | None = None) -> bytes:
        m = {ERR_ERROR: ace, ERR_DESCRIPTION: f"fuzz {code}", RESP_TIME: fx.NOW, ERR_CODE: code}
        if retry is not None:
            m[ERR_RETRY_AFTER] = retry
        return cbor.dumps(m)

    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(ok), ok)
    framed = {"body-token": b"\x00" + ok, "body-uses": b"\x00" + uses, "body-batch": b"\x00" + batch,
              "body-stale-time": b"\x01" + refusal("stale_time"), "body-rate-limited": b"\x05" + refusal("rate_limited")}
    return {
        **framed,
        "token": _http("200 OK", ok),
        "token-uses": _http("200 OK", uses),
        "batch": _http("200 OK", batch),
        "stale-time": _http("400 Bad Request", refusal("stale_time")),
        "rate-limited": _http("429 Too Many Requests", refusal("rate_limited", 5, 2), b"Retry-After: 2\r\n"),
        "denied": _http("403 Forbidden", refusal("scope_denied")),
        "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked),
        "until-close": b"HTTP/1.1 200 OK\r\n\r\n" + ok,
        "interim": b"HTTP/1.1 100 Continue\r\n\r\n" + _http("200 OK", ok),
        "http-500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
    }


# -- the device's own verifier against the host's ------------------------------------------

# Both verifiers with the same keys, clock, leeway, audience and hop, as tests/device/verify_diff.py
# sets them up: the device has no revocation list and takes no base64url text, and neither is used here.
DIFF_LEEWAY = 5


def _device_verify_setup() -> Callable[[bytes], None]:
    from ucrumb import verify as dv

    from ...errors import CrumbError
    from ...replay import MemoryReplayStore
    from ...verify import Verifier
    from ...wire import ERROR_CODES
    from .host_targets import token_input

    clock = lambda: fx.NOW

    def host_code(v: Verifier, token: bytes, resource: str, operation: str, hop: str | None) -> str:
        try:
            v.verify(token, resource, operation, hop=hop)
        except CrumbError as e:
            return e.code
        return "ok"

    def device_code(v: dv.Verifier, token: bytes, resource: str, operation: str) -> str:
        try:
            v.verify(token, resource, operation)
        except dv.Refused as e:
            if e.code not in ERROR_CODES:
                raise Finding(f"the device refused with {e.code!r}, a code not in the shared table", "unknown code") \
                    from e
            return e.code
        return "ok"

    def run(data: bytes) -> None:
        given = token_input(data)
        if given is None:
            return
        token, resource, operation, hop = given
        # Fresh verifiers per input (a replay set carried over would make one answer depend on the last).
        host = Verifier([fx.ISSUER.public], node_keys=[k.public for k in fx.HOPS], clock=clock, leeway=DIFF_LEEWAY,
                        audience="svc", replay=MemoryReplayStore(1024, fence=False, clock=clock, leeway=DIFF_LEEWAY))
        device = dv.Verifier([fx.ISSUER.public.raw], "svc", clock, node_keys=[k.public.raw for k in fx.HOPS],
                             leeway=DIFF_LEEWAY, hop=hop, fence=False)
        # Twice: the second presentation holds the two replay sets to the same count of uses.
        for presentation in (1, 2):
            h = host_code(host, token, resource, operation, hop)
            d = device_code(device, token, resource, operation)
            if h != d:
                raise Finding(f"presentation {presentation} of {token.hex()} for {operation} {resource} at hop {hop!r}:"
                              f" host {h}, device {d}", f"host {h}, device {d}")
            if h != "ok":
                return

    return run


def device_verify_seeds() -> dict[str, bytes]:
    out = {}
    for name, token in {**fx.valid_tokens(), **fx.pop_tokens()}.items():
        out[f"{name}-as-is"] = bytes((0,)) + token
        out[f"{name}-resigned"] = bytes((1,)) + token
    out["chain3-at-ingest"] = bytes((1 << 1,)) + fx.valid_tokens()["chain3"]
    out["claims-publish"] = bytes((4 << 1,)) + fx.valid_tokens()["claims"]
    return out
