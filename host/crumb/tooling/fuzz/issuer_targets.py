"""Targets for the issuer: its request parsers (CBOR and JSON) and the whole POST /token in-process.

The parsers may raise only ``Refusal``. The endpoint target runs the real
issuer (policy, registry, audit log in a temporary data dir, the in-memory
gate) on an event loop in this process, through the ASGI endpoint with fuzzed
headers and body, and re-MACs each request that parses, so that mutations
reach what lies behind the MAC: time, enrolment, policy, minting, the audit
log and the response encoders. A finding there is any answer with status 500
(the catch-all: ``internal_error``) or an exception out of the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...keys import b64u
from ..bench.device import enroll_data_dir
from . import fixtures as fx
from .harness import Finding

# -- the parsers ----------------------------------------------------------------------


def _request_cbor_setup() -> Callable[[bytes], None]:
    from ...issuer import protocol
    from ...issuer.codes import Refusal

    def run(data: bytes) -> None:
        try:
            req = protocol.parse_cbor_request(data)
        except Refusal:
            return
        # The fast path for the common request and the general parser: the same answer.
        try:
            common = protocol._parse_common(data)
        except IndexError:
            common = None
        if common is not None and common != protocol._parse_cbor(data):
            raise Finding(f"the common-request fast path and the general parser disagree on {data.hex()}")
        if req.mac_input + req.mac != data:
            raise Finding("the MAC input and the MAC are not the request's bytes")

    return run


def _request_json_setup() -> Callable[[bytes], None]:
    from ...issuer import protocol
    from ...issuer.codes import Refusal

    def run(data: bytes) -> None:
        try:
            protocol.parse_json_request(data)
        except Refusal:
            return

    return run


_KEY = bytes(32)  # seeds carry a zero MAC; the endpoint target re-MACs with the real device key


def cbor_request_seeds() -> dict[str, bytes]:
    from ...issuer.protocol import build_request

    def req(scopes: list, **kw: Any) -> bytes:
        return build_request(fx.DEVICE_ID, _KEY, scopes, nonce=b"\x01" * 6, now=fx.NOW, **kw)

    return {
        "common": req([("/sensors/temp01", "read")]),
        "ops": req([("/sensors/temp01", ["read", "publish"])]),
        "count": req([("/sensors/temp01", "read")], count=4),
        "batch": req([("/sensors/a", "read"), ("/sensors/b", "publish"), ("/config/x", "read")]),
        "aif": req([("/sensors/temp01", "read")], aif=True),
        "bitmask": req([("/api/v1", 3)]),
        "audience": req([("/sensors/temp01", "read")], audience="svc"),
        "optional-params": req([("/sensors/temp01", "read")], grant_type=True, ace_profile=True),
        "long-nonce": build_request(fx.DEVICE_ID, _KEY, [("/sensors/temp01", "read")], nonce=b"\x02" * 16,
                                    now=fx.NOW),
    }


def json_request_seeds() -> dict[str, bytes]:
    from ...issuer.protocol import build_json_request

    def req(scopes: list, **kw: Any) -> bytes:
        return build_json_request(fx.DEVICE_ID, _KEY, scopes, nonce=b"\x01" * 6, now=fx.NOW, **kw)

    return {
        "text": req([("/sensors/temp01", "read")]),
        "aif": req([("/sensors/temp01", ["read", "publish"])], aif=True),
        "count": req([("/sensors/temp01", "read")], count=3),
        "batch": req([("/sensors/a", "read"), ("/config/x", "read")]),
        "bitmask": req([("/api/v1", 3)]),
        "audience": req([("/sensors/temp01", "read")], audience="svc"),
        "grant": json.dumps({"client_id": fx.DEVICE_ID, "scope": "/sensors/temp01|read", "nonce": b64u(b"\1" * 6),
                             "time": fx.NOW, "mac": b64u(bytes(16)), "grant_type": "client_credentials",
                             "ace_profile": None}).encode(),
    }


# -- POST /token, in-process ----------------------------------------------------------

ENDPOINT_POLICY = """\
[issuer]
name = "crumb-fuzz"

[defaults]
ttl = 60
uses = 1
batch = 16
rate = 1000000.0
burst = 1000000

[groups.sensors]
[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read", "publish"]

[[groups.sensors.allow]]
resource = "/config/*"
operations = ["read"]
uses = 3
audience = "svc"

[[groups.sensors.allow]]
resource = "/api/*"
operations = ["GET", "POST", "PUT"]
"""

HEADER_END = b"\n\n"


def split_endpoint_input(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """An endpoint input is header lines ("name: value", one per line), an empty line, then
    the body; without the empty line it is all body, sent as application/ace+cbor."""
    head, sep, body = data.partition(HEADER_END)
    if not sep:
        return [(b"content-type", b"application/ace+cbor")], data
    headers = []
    for line in head.split(b"\n")[:32]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return headers, body


class Endpoint:
    """The issuer of a temporary data dir, its ASGI token endpoint, and an event loop to run it on."""

    def __init__(self, policy: str = ENDPOINT_POLICY) -> None:
        from ...issuer.app import Settings, TokenEndpoint, build_issuer
        from ...issuer.protocol import DeviceMacs

        self._tmp = tempfile.TemporaryDirectory(prefix="crumb-fuzz-issuer-")
        data, _ = enroll_data_dir(self._tmp.name, policy, {fx.DEVICE_ID: "sensors", "fuzz-dev-02": None})
        self.issuer = build_issuer(Settings(data, Path(data.policy), audit_sync="NORMAL"))
        self.issuer.clock = lambda: fx.NOW
        self.endpoint = TokenEndpoint(self.issuer)
        self.macs = DeviceMacs(self.issuer.macs.master)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.issuer.audit.start()

    def remac(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
        """The body with a valid MAC for its client_id, when it parses as a request; else unchanged."""
        from ...issuer import protocol
        from ...issuer.codes import Refusal

        ctype = dict(headers).get(b"content-type", b"")
        try:
            if b"json" in ctype:
                req = protocol.parse_json_request(body)
                doc = json.loads(body)
                doc["mac"] = b64u(self.macs.mac(req.client_id, req.mac_input))
                return json.dumps(doc).encode()
            req = protocol.parse_cbor_request(body)
        except Refusal:
            return body
        except Exception:  # noqa: BLE001 -- the endpoint parses it again: what escapes there is the finding
            return body
        return req.mac_input + self.macs.mac(req.client_id, req.mac_input)

    def post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict, bytes]:
        """(status, response headers, response body) for one POST /token of ``body``."""
        return self.answer(self.request(headers, body))

    def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[dict, list[dict]]:
        """The ASGI scope and messages of one POST /token (the body in chunks, as a server passes it on)."""
        from ...issuer.gate import MemoryGate

        self.issuer.gate = MemoryGate()  # nonces and rate buckets from one input never decide the next
        scope = {"type": "http", "method": "POST", "path": "/token", "headers": headers,
                 "client": ("127.0.0.1", 40000)}
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]
        return scope, [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                       for i, c in enumerate(chunks)]

    def answer(self, request: tuple[dict, list[dict]]) -> tuple[int, dict, bytes]:
        """Run the endpoint on a request from ``request()``."""
        scope, messages = request
        sent: list[dict] = []
        waiting = iter(messages)

        async def receive() -> dict:
            return next(waiting, {"type": "http.disconnect"})

        async def send(message: dict) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.endpoint(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], dict(start["headers"]), payload

    def close(self) -> None:
        self.loop.run_until_complete(self.issuer.audit.stop())
        self.issuer.registry.close()
        self.loop.close()
        self._tmp.cleanup()


def _token_endpoint_setup() -> Callable[[bytes], None]:
    endpoint = Endpoint()

    def run(data: bytes) -> None:
        headers, body = split_endpoint_input(data)
        body = endpoint.remac(headers, body)
        status, _, payload = endpoint.post(headers, body)
        if status >= 500 and status != 503:
            said = re.search(rb"internal error \(\w+\)", payload)  # the exception's type, as the issuer says it
            raise Finding(f"POST /token answered {status}: {payload[:300]!r}",
                          said.group().decode() if said else str(status))

    run.close = endpoint.close  # type: ignore[attr-defined]
    return run


def token_endpoint_seeds() -> dict[str, bytes]:
    cbor_type = b"content-type: application/ace+cbor\n"
    json_type = b"content-type: application/json\n"
    out = {}
    for name, body in cbor_request_seeds().items():
        out[f"cbor-{name}"] = cbor_type + b"\n" + body
    for name, body in json_request_seeds().items():
        out[f"json-{name}"] = json_type + b"content-length: %d\n\n" % len(body) + body
    plain = cbor_request_seeds()["common"]
    out["bare-body"] = plain
    out["media-params"] = b"content-type: application/ace+cbor; charset=x\naccept: application/json\n\n" + plain
    out["bad-length"] = cbor_type + b"content-length: 99999999999999\n\n" + plain
    out["no-type"] = b"accept: application/json\n\n" + plain
    return out
