"""The issuer as an ASGI application: small pieces, one per endpoint.

    POST /token     token endpoint (application/ace+cbor or application/json)
    GET  /keys      issuer public keys: JSON (JWK set) or COSE_KeySet (CBOR)
    GET  /healthz   liveness and the state of the stores
    GET  /metrics   Prometheus text

The token endpoint is raw ASGI rather than a framework route: it is the hot
path, and a router plus request object would cost a measurable share of the
budget (docs/issuer.md has the figures). The body limit is enforced on
Content-Length before reading and again while reading, so an oversized body
is never held in memory.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .. import cbor
from ..wire import (
    ALG_EDDSA,
    CBOR_TYPES,
    COSE_CRV_ED25519,
    COSE_KEY_ALG,
    COSE_KEY_CRV,
    COSE_KEY_KID,
    COSE_KEY_KTY,
    COSE_KEY_OP_VERIFY,
    COSE_KEY_OPS,
    COSE_KEY_SET_TYPE,
    COSE_KEY_X,
    COSE_KTY_OKP,
    JSON_TYPE,
    POP_RESPONSE_TYPE,
)
from .audit import AuditLog
from .codes import Refusal
from .datadir import DataDir
from .gate import MemoryGate, RedisGate
from .issuing import Issuer
from .keystore import Keyring, load_or_create_master
from .policy import Policy
from .policy import load as load_policy
from .registry import Registry

log = logging.getLogger("crumb.issuer")

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


@dataclass
class Settings:
    data: DataDir
    policy_path: Path | None = None      # None: DATA/policy.toml if present, else deny everything
    redis_url: str | None = None
    audit_sync: str = "FULL"
    redis_timeout: float = 1.0
    audit_segment_records: int = 1_000_000  # rotate the audit log into a new segment after this many; 0: never

    def resolved_policy_path(self) -> Path | None:
        if self.policy_path is not None:
            return self.policy_path
        return self.data.policy if self.data.policy.exists() else None


def build_issuer(settings: Settings) -> Issuer:
    """Open (or create) everything the issuer needs; raises with a clear message if it cannot."""
    data = settings.data.create()
    master = load_or_create_master(data.root)
    keyring = Keyring.open(data.keys)
    policy_path = settings.resolved_policy_path()
    policy = load_policy(policy_path) if policy_path is not None else Policy()
    gate = RedisGate(settings.redis_url, settings.redis_timeout) if settings.redis_url else MemoryGate()
    audit_path, audit_lock = data.claim_audit()
    audit = AuditLog(audit_path, settings.audit_sync, settings.audit_segment_records)
    audit.lock_fd = audit_lock  # held (open) for the life of the process
    return Issuer(master=master, keyring=keyring, registry=Registry(data.registry), audit=audit,
                  policy=policy, policy_path=policy_path, gate=gate)


# -- small ASGI helpers ---------------------------------------------------------------


async def respond(send: Send, status: int, body: bytes, content_type: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _nothing() -> None:
    return None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _problem(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def read_body(receive: Receive, limit: int, message: dict | None = None) -> bytes:
    """The whole request body (from ``message`` on, if one was read already), or _BodyTooLarge
    as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        if message is None:
            message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        message = None


# -- endpoints ------------------------------------------------------------------------


_perf_counter = time.perf_counter
_FORMATS = {**{t.encode(): "cbor" for t in CBOR_TYPES}, JSON_TYPE.encode(): "json"}
_POP_CONTENT_TYPE = (b"content-type", POP_RESPONSE_TYPE.encode())
_CONTENT_TYPE = {"cbor": (b"content-type", CBOR_TYPES[0].encode()), "json": (b"content-type", JSON_TYPE.encode())}
_NO_STORE = (b"cache-control", b"no-store")


class TokenEndpoint:
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        issuer = self.issuer
        t0 = _perf_counter()
        headers = dict(scope["headers"])  # of a repeated header, the last (names are lower-case in ASGI)
        raw_type = headers.get(b"content-type", b"")
        fmt = _FORMATS.get(raw_type)  # the exact media types devices send; anything else is parsed
        if fmt is None:
            media = raw_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            fmt = "cbor" if media in CBOR_TYPES else "json" if media == JSON_TYPE else None
        limit = issuer.policy.max_request_bytes
        client = scope.get("client")
        peer = client[0] if client else None
        refusal = None
        body = None
        length = headers.get(b"content-length")
        if fmt is None:
            fmt = "json" if b"json" in headers.get(b"accept", b"") else "cbor"
            refusal = Refusal("unsupported_media_type",
                              f"Content-Type {media or '(none)'!r} is not application/ace+cbor or application/json")
        elif length is not None and not length.isdigit():
            refusal = Refusal("malformed", "Content-Length is not a number")
        elif length is not None and (len(length) > 12 or int(length) > limit):
            refusal = Refusal("too_large", f"the body is {int(length[:13])}{'+' if len(length) > 12 else ''} "
                                           f"bytes; the limit is {limit}")
        else:
            message = await receive()  # nearly always the whole body: one message, read here
            body = message.get("body", b"")
            if message.get("more_body", False) or message["type"] != "http.request" or len(body) > limit:
                try:
                    body = await read_body(receive, limit, message)
                except _BodyTooLarge:
                    body, refusal = None, Refusal("too_large", f"the body exceeds the limit of {limit} bytes")
                except _Disconnected:
                    return
        status, payload, retry_after = await issuer.token(body, fmt, peer, refusal)
        # The same headers as respond() writes, from constants: this is every token's answer.
        # An encrypted answer (proof of possession, PROTOCOL.md §11.9) is a COSE_Encrypt0, an array;
        # every other CBOR answer is a map.
        ctype = _CONTENT_TYPE[fmt] if payload[:1] != b"\x83" else _POP_CONTENT_TYPE
        out = [ctype, (b"content-length", b"%d" % len(payload)), _NO_STORE]
        if retry_after is not None:
            out.append((b"retry-after", b"%d" % retry_after))
        if status == 413:
            out.append((b"connection", b"close"))  # the unread rest of the body is not ours to drain
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})
        issuer.metrics.token(status, _perf_counter() - t0)


class KeysEndpoint:
    """Issuer public keys. Node keys (hops, attenuators) are listed apart and never as issuer keys."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self._cache: tuple | None = None

    def bodies(self) -> tuple[bytes, bytes]:
        ring, policy = self.issuer.keyring, self.issuer.policy
        stamp = (tuple(k.kid for k, _ in ring.published()), self.issuer.metrics.policy_reloads)
        if self._cache is None or self._cache[0] != stamp:
            keys = []
            cose = []
            for key, status in ring.published():
                jwk = key.public.to_jwk()
                keys.append({**jwk, "alg": "EdDSA", "use": "sig", "status": status})
                cose.append({COSE_KEY_KTY: COSE_KTY_OKP, COSE_KEY_KID: key.kid, COSE_KEY_ALG: ALG_EDDSA,
                             COSE_KEY_OPS: [COSE_KEY_OP_VERIFY], COSE_KEY_CRV: COSE_CRV_ED25519,
                             COSE_KEY_X: key.public.raw})
            nodes = [{"name": name, **pub.to_jwk()} for name, pub in sorted(policy.nodes.items())]
            doc = {"keys": keys, "nodes": nodes, "issuer": policy.name}
            self._cache = (stamp, json.dumps(doc, indent=1).encode(), cbor.dumps(cose))
        return self._cache[1], self._cache[2]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.issuer.refresh()
        as_json, as_cbor = self.bodies()
        accept = (_header(scope, b"accept") or b"").decode("latin-1")
        cache = [(b"cache-control", b"max-age=60")]
        if COSE_KEY_SET_TYPE in accept or CBOR_TYPES[1] in accept:  # application/cbor
            await respond(send, 200, as_cbor, COSE_KEY_SET_TYPE, cache)
        else:
            await respond(send, 200, as_json, JSON_TYPE, cache)
        self.issuer.metrics.request("keys", 200)


class HealthEndpoint:
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        issuer = self.issuer
        store_ok = await issuer.gate.ping()
        audit_ok = issuer.audit.healthy
        key = issuer.keyring.current
        doc = {
            "status": "ok" if store_ok and audit_ok else "degraded",
            "time": int(issuer.clock()),
            "kid": key.kid.hex() if key else None,
            "store": ("redis" if isinstance(issuer.gate, RedisGate) else "memory") + (" ok" if store_ok else " down"),
            "audit": "ok" if audit_ok else f"failing: {issuer.audit.last_error or 'writer stopped'}",
            "policy": str(issuer.policy.source),
            "pid": os.getpid(),
        }
        status = 200 if doc["status"] == "ok" else 503
        await respond(send, status, json.dumps(doc).encode(), JSON_TYPE, [(b"cache-control", b"no-store")])
        issuer.metrics.request("healthz", status)


class MetricsEndpoint:
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        issuer = self.issuer
        more = {
            "crumb_issuer_audit_records_total": ("counter", "Audit records committed by this process.",
                                                 [({}, issuer.audit.records)]),
            "crumb_issuer_audit_commits_total": ("counter", "Audit group commits by this process.",
                                                 [({}, issuer.audit.commits)]),
            "crumb_issuer_audit_failures_total": ("counter", "Audit commits that failed.",
                                                  [({}, issuer.audit.failures)]),
            "crumb_issuer_audit_rotations_total": ("counter", "Audit log segments started by this process.",
                                                   [({}, issuer.audit.rotations)]),
            "crumb_issuer_audit_rotation_errors_total": ("counter", "Rotations that failed (the segment went on).",
                                                         [({}, issuer.audit.rotation_errors)]),
            "crumb_issuer_audit_segment": ("gauge", "The audit segment this process appends to.",
                                           [({}, issuer.audit.segment)]),
            "crumb_issuer_devices_enrolled": ("gauge", "Enrolled devices (registry).",
                                              [({}, len(issuer.registry.known))]),
            "crumb_issuer_devices_revoked": ("gauge", "Revoked devices (registry).",
                                             [({}, len(issuer.registry.revoked))]),
            "crumb_issuer_key_info": ("gauge", "Published issuer keys.",
                                      [({"kid": k.kid.hex(), "status": s}, 1) for k, s in issuer.keyring.published()]),
        }
        body = issuer.metrics.render(more).encode()
        await respond(send, 200, body, "text/plain; version=0.0.4; charset=utf-8")
        issuer.metrics.request("metrics", 200)


class IssuerApp:
    """Routes by exact path, runs the lifespan (audit writer, Redis), answers 404/405 as JSON."""

    def __init__(self, issuer: Issuer, companions: tuple = ()) -> None:
        self.issuer = issuer
        # Other front ends of the same issuer (the CoAP endpoint, issuer/coap.py): each has async
        # start() and stop(), run in this event loop with the lifespan, started after the audit writer.
        self.companions = companions
        self.routes: dict[str, tuple[frozenset, Callable]] = {
            "/token": (frozenset({"POST"}), TokenEndpoint(issuer)),
            "/keys": (frozenset({"GET", "HEAD"}), KeysEndpoint(issuer)),
            "/healthz": (frozenset({"GET", "HEAD"}), HealthEndpoint(issuer)),
            "/metrics": (frozenset({"GET", "HEAD"}), MetricsEndpoint(issuer)),
        }

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing back the endpoint's coroutine: the server awaits that
        # directly, so routing adds no coroutine of its own to every request.
        kind = scope["type"]
        if kind == "http":
            route = self.routes.get(scope["path"])
            if route is None:
                return respond(send, 404, _problem(404, f"no such endpoint {scope['path']!r}"), JSON_TYPE)
            methods, endpoint = route
            if scope["method"] not in methods:
                return respond(send, 405, _problem(405, f"{scope['path']} accepts {', '.join(sorted(methods))}"),
                               JSON_TYPE, [(b"allow", ", ".join(sorted(methods)).encode())])
            return endpoint(scope, receive, send)
        if kind == "lifespan":
            return self.lifespan(receive, send)
        return _nothing()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        issuer = self.issuer
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:  # noqa: BLE001 -- say why, and let the server exit
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for companion in self.companions:
                    await companion.stop()
                await issuer.audit.stop()
                await issuer.gate.close()
                issuer.registry.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        issuer = self.issuer
        issuer.audit.start()
        if isinstance(issuer.gate, RedisGate):
            issuer.gate.publish_revocations_from(issuer.registry.revoked_ids)
            if not await issuer.gate.ping():  # serve anyway, and refuse with store_unavailable
                log.warning("Redis at %s is not answering; token requests fail closed until it does",
                            issuer.gate.url)
        for companion in self.companions:
            await companion.start()

