"""The device's CoAP message parser (``ucrumb.coap.parse``), and re-encoding what it accepts.

RFC 7252's message format has one encoding per message: the token length,
each option delta and length have exactly one nibble-and-extension form
(13 + one byte covers 13-268, 14 + two bytes 269-65804, and a smaller
value never takes a longer form), options come in order of their numbers,
and an empty payload has no marker. So whatever ``parse`` accepts,
``encode`` of the parsed fields writes back byte for byte (for a datagram
the client would read: at most ``MAX_DATAGRAM`` bytes). ``parse`` may
refuse only with ``ValueError`` (``CoapError`` is an ``OSError`` for the
exchange; the parser does not raise it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import fixtures as fx
from .harness import Finding


def _device_coap_setup() -> Callable[[bytes], None]:
    from ucrumb import coap

    def run(data: bytes) -> None:
        try:
            m = coap.parse(data)
        except ValueError:
            return
        mtype, code, mid, token, options, payload = m
        if len(data) > coap.MAX_DATAGRAM:
            return  # the client never reads it whole (and encode refuses an option it could never send)
        try:
            again = bytes(coap.encode(mtype, code, mid, token, options, payload))
        except ValueError as e:
            raise Finding(f"parsed {data.hex()} but encode refuses its fields: {e}", "encode refuses") from e
        if again != data:
            raise Finding(f"parsed {data.hex()} but encode writes {again.hex()}", "encoding differs")
        if coap.parse(again) != m:
            raise Finding(f"{data.hex()} parses to another message after encoding", "parse differs")

    return run


def device_coap_seeds() -> dict[str, bytes]:
    from ucrumb import coap

    token = fx.valid_tokens()["plain"]
    opts, _ = coap.uri("/sensors/temp01?a=1&b")
    with_token = opts + [(coap.TOKEN_OPTION, token), (coap.POP_OPTION, bytes(range(20))),
                         (coap._CONTENT_FORMAT, coap.uint(coap.CBOR))]
    m = {
        "con-get": coap.encode(coap._CON, 1, 0x1234, b"12345678", with_token, b""),
        "con-post": coap.encode(coap._CON, 2, 7, b"tok", opts + [(coap._CONTENT_FORMAT, coap.uint(coap.ACE_CBOR))],
                                b"\xa1\x01\x02"),
        "ack-content": coap.encode(coap._ACK, 69, 0xFFFF, b"\x01\x02\x03\x04",
                                   [(coap._CONTENT_FORMAT, coap.uint(coap.ACE_CBOR)), (coap._MAX_AGE, b"\x3c")],
                                   b"\xa1\x01\x02"),
        "ack-block2": coap.encode(coap._ACK, 69, 1, b"\xaa\xbb\xcc\xdd", [(coap._BLOCK2, coap.uint(1 << 4 | 8 | 2))],
                                  bytes(64)),
        "ack-empty": coap.encode(coap._ACK, 0, 42, b"", (), b""),
        "rst": coap.encode(coap._RST, 0, 43, b"", (), b""),
        "non-unauthorized": coap.encode(coap._NON, 129, 9, b"\x00", [], b"\xa1\x05\x61x"),
        "long-option": coap.encode(coap._CON, 1, 3, b"", [(coap._URI_PATH, b"p" * 300)], b""),
    }
    return {name: bytes(v) for name, v in m.items()}


# -- the host's CoapGuard --------------------------------------------------------------------

GUARD_PATH = "/sensors"


def _drive(coro: Any) -> Any:
    """Run a coroutine that never waits (the guard and its handler here) to its result, without a loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise Finding("the guard waited on something: it cannot be driven in-process", "awaited")


def _coap_guard_setup() -> Callable[[bytes], None]:
    from aiocoap import Code, Message, error

    from ...coapbinding import Answer
    from ...replay import MemoryReplayStore
    from ...services.coap import CoapGuard
    from ...verify import Verifier

    clock = lambda: fx.NOW

    async def handle(request: Message, payload: bytes, grant: Any) -> Message:
        return Message(code=Code.CONTENT, payload=b"ok")

    def run(data: bytes) -> None:
        try:
            request = Message.decode(data)
        except (error.UnparsableMessage, UnicodeDecodeError):
            # aiocoap drops it before any resource sees it. A string option (Uri-Path, Uri-Query, ...)
            # that is not UTF-8 escapes Message.decode as UnicodeDecodeError (aiocoap 0.4.17,
            # optiontypes.StringOption.decode): its UDP transport then drops the datagram, logging the
            # traceback, and goes on serving (checked against a real server: docs/hardening.md).
            return
        if not request.code.is_request():
            return  # aiocoap routes only requests to a resource
        # A fresh verifier and guard per input: the first hop of PoP tokens, the fuzz keys, a fixed clock.
        verifier = Verifier([fx.ISSUER.public], node_keys=[k.public for k in fx.HOPS], clock=clock, audience="svc",
                            replay=MemoryReplayStore(1024, fence=False, clock=clock), pop_key=fx.POP_HOP)
        guard = CoapGuard(verifier, handle, GUARD_PATH)
        # Site-like routing, but every request reaches the guard (more of its code than a real Site lets
        # through): a path under /sensors keeps what follows it, any other path leaves nothing. Then the
        # block-wise bound, then render, as aiocoap calls them.
        request.opt.uri_path = request.opt.uri_path[1:] if request.opt.uri_path[:1] == ("sensors",) else ()
        try:
            _drive(guard.needs_blockwise_assembly(request))
        except Answer:
            return  # 4.13, the payload over its bound
        response = _drive(guard.render(request))
        if response.code == Code.INTERNAL_SERVER_ERROR or guard.rejected["internal_error"]:
            raise Finding(f"the guard answered {data.hex()} with {response.code}: {bytes(response.payload)!r}",
                          "internal_error")

    return run


def coap_guard_seeds() -> dict[str, bytes]:
    from aiocoap import CON, Code, Message
    from aiocoap.optiontypes import OpaqueOption

    from ...pop import make_proof
    from ...services.envelope import pack
    from ...wire import COAP_CF_CBOR, COAP_OPT_CRUMB_POP, COAP_OPT_CRUMB_TOKEN

    tokens = fx.valid_tokens()

    def msg(code: Any, path: str, token: bytes | None = None, proof: bytes | None = None, payload: bytes = b"",
            cf: int | None = None, query: tuple[str, ...] = (), copies: int = 1) -> bytes:
        m = Message(code=code, payload=payload)
        m.mtype, m.mid, m.token = CON, 0x2222, b"\x01\x02"  # the wire fields (aiocoap's constructor deprecates them)
        m.opt.uri_path = tuple(s for s in path.split("/") if s)
        m.opt.uri_query = query
        for _ in range(copies if token is not None else 0):
            m.opt.add_option(OpaqueOption(COAP_OPT_CRUMB_TOKEN, token))
        if proof is not None:
            m.opt.add_option(OpaqueOption(COAP_OPT_CRUMB_POP, proof))
        if cf is not None:
            m.opt.content_format = cf
        return bytes(m.encode())

    pop_token = fx.pop_tokens()["pop"]
    proof = make_proof(fx.POP_KEY, pop_token, fx.NOW, "GET", "/sensors/temp01?x=1", b"")
    publish = fx.pop_tokens()["pop-uses"]
    publish_proof = make_proof(fx.POP_KEY, publish, fx.NOW, "POST", "/sensors/temp01", b"x")
    return {
        "get-token-option": msg(Code.GET, "/sensors/temp01", tokens["plain"]),
        "get-chain3": msg(Code.GET, "/sensors/temp01", tokens["chain3"]),
        "post-envelope": msg(Code.POST, "/sensors/temp02", payload=pack(tokens["claims"], b"21.5"), cf=COAP_CF_CBOR),
        "get-pop-proof-option": msg(Code.GET, "/sensors/temp01", pop_token, proof, query=("x=1",)),
        "post-pop-envelope": msg(Code.POST, "/sensors/temp01", payload=pack(publish, b"x", publish_proof),
                                 cf=COAP_CF_CBOR),
        "no-token": msg(Code.GET, "/sensors/temp01"),
        "get-two-token-options": msg(Code.GET, "/sensors/temp01", tokens["plain"], copies=2),
        "delete": msg(Code.DELETE, "/sensors/temp01", tokens["plain"]),
    }
