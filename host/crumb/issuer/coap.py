"""POST /token over CoAP (RFC 7252; RFC 9200 §5.8 is ACE's own CoAP binding), beside HTTP.

The same pipeline as HTTP (Issuer.token: the same checks, audit record and
answer bytes), reached through aiocoap on UDP; `crumb issuer serve --coap`
starts it in the issuer's process and event loop (IssuerApp's lifespan), so
HTTP and CoAP share one issuer: one nonce store, one rate limiter, one
audit chain. Differences from HTTP, all in the framing (PROTOCOL.md §13):

- Content-Format 19 (application/ace+cbor; 50, application/json, is taken
  as HTTP takes JSON) instead of Content-Type; none or another is
  unsupported_media_type (4.15).
- Tokens are answered 2.01 Created (RFC 9200 §5.8.2), an encrypted answer
  (proof of possession) with Content-Format 16 (application/cose;
  cose-type="cose-encrypt0", as HTTP's Content-Type); a refusal with the
  CoAP code of its HTTP status (crumb.coapbinding), with the same ACE error
  body, which carries the issuer's time as every answer does; Retry-After
  is Max-Age (RFC 7252 §5.9.3.4).
- The request is bounded by the policy's max_request_bytes whether it
  comes in one datagram or in blocks (Block1); an answer larger than a
  block goes out in blocks (Block2), from aiocoap's cache of the whole
  answer, so a block fetch never issues tokens again. A retransmitted
  request (same message id) gets aiocoap's stored answer, never a second
  issuance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiocoap
from aiocoap import Code, Message

from ..coapbinding import BoundedResource, bound_port, code_for, peer, server_context
from ..wire import COAP_CF_ACE_CBOR, COAP_CF_COSE_ENCRYPT0
from .codes import Refusal
from .issuing import Issuer

log = logging.getLogger("crumb.issuer.coap")

CF_JSON = 50  # application/json (RFC 7252 §12.3)
_FORMATS = {COAP_CF_ACE_CBOR: "cbor", CF_JSON: "json"}
_CF = {"cbor": COAP_CF_ACE_CBOR, "json": CF_JSON}


class TokenResource(BoundedResource):
    """POST /token: one request through Issuer.token, as app.TokenEndpoint does for HTTP."""

    def __init__(self, issuer: Issuer) -> None:
        super().__init__(lambda: issuer.policy.max_request_bytes, self._too_large)
        self.issuer = issuer

    async def _too_large(self, request: Message) -> Message:
        limit = self.issuer.policy.max_request_bytes
        return await self._answer(request, None, Refusal("too_large", f"the body exceeds the limit of {limit} bytes"),
                                  time.perf_counter())

    async def render_post(self, request: Message) -> Message:
        t0 = time.perf_counter()
        refusal = None
        body: bytes | None = bytes(request.payload)
        cf = request.opt.content_format
        if cf is None or int(cf) not in _FORMATS:
            body, refusal = None, Refusal("unsupported_media_type",
                                          f"Content-Format {'(none)' if cf is None else int(cf)} is not "
                                          f"{COAP_CF_ACE_CBOR} (application/ace+cbor) or {CF_JSON} (application/json)")
        return await self._answer(request, body, refusal, t0)

    async def _answer(self, request: Message, body: bytes | None, refusal: Refusal | None, t0: float) -> Message:
        issuer = self.issuer
        cf = request.opt.content_format
        fmt = _FORMATS.get(int(cf), "cbor") if cf is not None else "cbor"
        status, payload, retry_after = await issuer.token(body, fmt, peer(request), refusal)
        # An encrypted answer (proof of possession, PROTOCOL.md §11.9) is a COSE_Encrypt0, an array, and says
        # so as HTTP's Content-Type does: 16, application/cose; cose-type="cose-encrypt0". Every other is a map.
        cf = COAP_CF_COSE_ENCRYPT0 if status == 200 and payload[:1] == b"\x83" else _CF[fmt]
        out = Message(code=Code.CREATED if status == 200 else code_for(status), payload=payload, content_format=cf)
        if retry_after is not None:
            out.opt.max_age = retry_after
        issuer.metrics.token(status, time.perf_counter() - t0)
        return out


class CoapServer:
    """The issuer's CoAP endpoint on (host, port) UDP, started and stopped with the app's lifespan."""

    def __init__(self, issuer: Issuer, host: str = "127.0.0.1", port: int = 5683,
                 announce: Callable[[int], None] | None = None) -> None:
        self.issuer = issuer
        self.host = host
        self.port = port
        self.announce = announce  # called with the bound port once listening
        self.context: aiocoap.Context | None = None

    def site(self) -> aiocoap.resource.Site:
        site = aiocoap.resource.Site()
        site.add_resource(["token"], TokenResource(self.issuer))
        return site

    async def start(self) -> int:
        self.context = await server_context(self.site(), self.host, self.port)
        self.port = bound_port(self.context)
        if self.announce is not None:
            self.announce(self.port)
        return self.port

    async def stop(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
