"""CoAP services: an aiocoap resource wrapper that verifies the token of every request first.

    async def handle(request: aiocoap.Message, payload: bytes, grant: Grant) -> aiocoap.Message: ...

    guard = CoapGuard(verifier, handle, "/sensors/t1")
    site = aiocoap.resource.Site()
    site.add_resource(guard.segments, guard)
    context = await crumb.coapbinding.server_context(site, "0.0.0.0", 5683)  # hardened (see there)

The convention (PROTOCOL.md §13.3): the token travels in CoAP option 65003
(crumb.wire.COAP_OPT_CRUMB_TOKEN: experimental range, critical, unsafe to
forward), the request's payload being the application's; or, as over MQTT,
the payload is the envelope ``[token, payload]`` with Content-Format 60
(application/cbor) and no token option. The token is verified for resource =
the request's Uri-Path as "/a/b" (or ``resource(path)``): the path the guard
is mounted at (aiocoap's Site hands a resource only what follows it), then
whatever Uri-Path segments remain; and operation = the method's
(GET read, POST publish, PUT write, DELETE delete, as the HTTP middleware's
default rule). The handler sees only verified requests.

A proof-of-possession token's proof (§12.1) travels in option 65007
(crumb.wire.COAP_OPT_CRUMB_POP) beside the token's option, or as the
envelope's third element; either way it is checked by the Verifier for
method = the request code's name, target = "/" + the Uri-Path (the mount
path, then what follows) joined by "/", then "?" + the Uri-Query joined by
"&" if any, body = the payload (the envelope's payload element).

A refusal is a CoAP error code with the stable crumb code in a diagnostic
payload (RFC 7252 §5.5.2: UTF-8 text, no Content-Format), ``"<code>:
<message>"``; the codes map as the HTTP middleware's statuses do
(middleware/problems.py): 4.01 Unauthorized for a missing or invalid token,
4.03 Forbidden for a valid token that does not cover the request, 5.03
Service Unavailable (Max-Age 1) when the replay store or the service log
cannot answer. A request over ``max_payload`` bytes is 4.13. Nothing raised
while checking escapes to aiocoap: an unexpected exception refuses the
request as internal_error (5.00) and is logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from aiocoap import Code, Message

from ..coapbinding import BoundedResource, code_for
from ..errors import CrumbError, InternalError, Malformed, MissingToken, PopFailed
from ..verify import Verifier
from ..wire import COAP_CF_CBOR, COAP_OPT_CRUMB_POP, COAP_OPT_CRUMB_TOKEN
from . import envelope
from .grant import Grant
from .middleware.problems import status_for
from .servicelog import EVENT_ACCEPTED, EVENT_REFUSED, ServiceLog

log = logging.getLogger("crumb.services.coap")

OPERATIONS = {Code.GET: "read", Code.POST: "publish", Code.PUT: "write", Code.DELETE: "delete"}
MAX_PAYLOAD_BYTES = 16 * 1024

Handler = Callable[[Message, bytes, Grant], Awaitable[Message]]


def refusal(code: str, message: str) -> Message:
    """The CoAP answer to a refused request: the mapped code, ``"<code>: <message>"`` as diagnostic payload."""
    status = 500 if code == InternalError.code else status_for(code)
    out = Message(code=code_for(status), payload=f"{code}: {message}"[:200].encode("utf-8", "replace"))
    if status == 503:
        out.opt.max_age = 1
    return out


class CoapGuard(BoundedResource):
    """Verify, then hand ``(request, payload, grant)`` to ``handler``. Counters: ``accepted``, ``rejected``."""

    def __init__(self, verifier: Verifier, handler: Handler, path: str, *,
                 resource: Callable[[str], str] | None = None,
                 operations: dict | None = None, max_payload: int = MAX_PAYLOAD_BYTES,
                 service_log: ServiceLog | None = None) -> None:
        super().__init__(lambda: self.max_payload, self._too_large)
        self.verifier = verifier
        self.handler = handler
        self.segments = [seg for seg in path.split("/") if seg]  # where it is mounted: Site.add_resource(segments)
        self.resource = resource
        self.operations = OPERATIONS if operations is None else operations
        self.max_payload = max_payload
        self.service_log = service_log
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    async def _too_large(self, request: Message) -> Message:
        self.rejected["too_large"] += 1
        out = refusal("too_large", f"the request exceeds {self.max_payload} bytes")
        out.code = Code.REQUEST_ENTITY_TOO_LARGE
        return out

    async def render(self, request: Message) -> Message:
        token: bytes | None = None
        target: str | None = None
        operation = self.operations.get(request.code)
        if operation is None:
            return Message(code=Code.METHOD_NOT_ALLOWED)
        try:
            path = "/" + "/".join([*self.segments, *request.opt.uri_path])
            target = self.resource(path) if self.resource is not None else path
            payload = bytes(request.payload)
            carried = request.opt.get_option(COAP_OPT_CRUMB_TOKEN)
            proofs = request.opt.get_option(COAP_OPT_CRUMB_POP)
            proof: bytes | None = None
            if carried:
                if len(carried) > 1:
                    raise Malformed("more than one token option: which one is meant is not guessed")
                token = bytes(carried[0].value)
                if proofs:
                    if len(proofs) > 1:
                        raise PopFailed("more than one proof option: which one is meant is not guessed")
                    proof = bytes(proofs[0].value)
            elif request.opt.content_format is not None and int(request.opt.content_format) == COAP_CF_CBOR:
                if proofs:
                    raise Malformed(f"a proof option ({COAP_OPT_CRUMB_POP}) goes with the token option, not with "
                                    "an envelope (whose third element is its proof)")
                token, payload, proof = envelope.unpack_proof(payload, max_token=self.verifier.max_token_bytes,
                                                              max_payload=self.max_payload)
            else:
                raise MissingToken(f"no token: option {COAP_OPT_CRUMB_TOKEN}, or an envelope with Content-Format "
                                   f"{COAP_CF_CBOR}")
            pop = None
            if proof is not None:  # the first hop of a PoP token checks it in the Verifier (PROTOCOL.md §12.1)
                from ..pop import PopRequest
                query = request.opt.uri_query
                pop = PopRequest(proof, request.code.name, path + ("?" + "&".join(query) if query else ""), payload)
            verified = self.verifier.verify(token, target, operation, pop=pop)
        except CrumbError as e:
            return self._refuse(token, target, operation, e.code, e.message)
        except Exception:  # fail closed; aiocoap never sees it
            log.exception("refused a CoAP request to %r: checking it raised", target)
            return self._refuse(token, target, operation, InternalError.code, "checking the request raised")
        grant = Grant(token, verified, target, operation)
        if self.service_log is not None:
            try:
                self.service_log.log(token=token, decision=EVENT_ACCEPTED, code=None, resource=target,
                                     operation=operation, hops=grant.attested)
            except CrumbError as e:  # fail closed: nothing is handled without its record
                return self._refuse(None, target, operation, e.code, e.message, record=False)
        self.accepted += 1
        return await self.handler(request, payload, grant)

    def _refuse(self, token: bytes | None, target: str | None, operation: str, code: str, message: str,
                record: bool = True) -> Message:
        self.rejected[code] += 1
        log.warning("refused a CoAP request to %r: %s: %s", target, code, message, extra={"crumb_code": code})
        if record and self.service_log is not None:
            try:
                self.service_log.log(token=token, decision=EVENT_REFUSED, code=code, resource=target,
                                     operation=operation, message=message)
            except CrumbError as failed:  # refused either way; only its record is lost
                log.error("the service log could not record a refusal (%s): %s", code, failed.message)
        return refusal(code, message)
