"""What the issuer's and the services' CoAP endpoints share (PROTOCOL.md §13): response codes
mapped from the HTTP ones, the peer's address, and resources whose requests are bounded.

aiocoap is the `coap` extra; only the CoAP endpoints import this module.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import aiocoap
from aiocoap import Code, Message, error, resource

# HTTP status -> CoAP response code. The CoAP code of the same meaning (RFC 7252 §5.9, §12.1.2;
# RFC 8075 §7 maps them the same way); anything unlisted fails closed as 5.00.
_CODES = {
    200: Code.CONTENT,
    201: Code.CREATED,
    400: Code.BAD_REQUEST,
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.REQUEST_ENTITY_TOO_LARGE,
    415: Code.UNSUPPORTED_CONTENT_FORMAT,
    500: Code.INTERNAL_SERVER_ERROR,
    502: Code.BAD_GATEWAY,
    503: Code.SERVICE_UNAVAILABLE,
}


def code_for(status: int) -> Code:
    """The CoAP response code for an HTTP status (5.00 for one without a counterpart)."""
    return _CODES.get(status, Code.INTERNAL_SERVER_ERROR)


def peer(request: Message) -> str | None:
    """The requester's IP address as the HTTP endpoints log it (an IPv4 address without its ::ffff: prefix)."""
    try:
        host = request.remote.sockaddr[0]
    except (AttributeError, IndexError, TypeError):
        return None
    return host[7:] if isinstance(host, str) and host.startswith("::ffff:") else host


class Answer(error.RenderableError):
    """A prepared response raised from before render() (aiocoap sends what to_message() returns)."""

    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message

    def to_message(self) -> Message:
        return self.message


class BoundedResource(resource.Resource):
    """A resource whose requests, reassembled from blocks (RFC 7959 Block1) or not, are at most ``limit``
    bytes: aiocoap's spool would otherwise keep any number of blocks. ``oversized(request)`` builds the
    refusal (the issuer's carries its ACE body and time)."""

    def __init__(self, limit: Callable[[], int], oversized: Callable[[Message], Awaitable[Message]]) -> None:
        super().__init__()
        self.limit = limit
        self.oversized = oversized

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        block1 = request.opt.block1
        limit = self.limit()
        if (block1 is not None and block1.start + len(request.payload) > limit) or len(request.payload) > limit:
            raise Answer(await self.oversized(request))
        return True


def _sockets(context: aiocoap.Context) -> list:
    out = []
    for interface in context.request_interfaces:
        inner = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        transport = getattr(inner, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and hasattr(sock, "getsockname"):
            out.append(sock)
    return out


def bound_port(context: aiocoap.Context) -> int:
    """The UDP port an aiocoap server context listens on (useful after binding port 0)."""
    for sock in _sockets(context):
        return sock.getsockname()[1]
    raise RuntimeError("the CoAP context has no UDP socket")


# linux/in.h IP_RECVERR, linux/in6.h IPV6_RECVERR (the socket module names neither).
_IP_RECVERR, _IPV6_RECVERR = 11, 25


def harden(context: aiocoap.Context) -> None:
    """Turn off the ICMP error queue aiocoap's udp6 transport asks for (IP_RECVERR, IPV6_RECVERR).

    Under uvloop (the issuer's loop) one queued ICMP error, which any client causes by closing its
    socket before the answer arrives (port unreachable), leaves the socket's reader dead: the
    endpoint answers nothing any more (tests/device/test_coap_robustness.py shows it). Without the
    queue, Linux reports no ICMP error on an unconnected UDP socket: a server loses nothing by it
    (it never waits on a client), and aiocoap's retransmissions of a separate response simply run
    out as they do when a client is silent.
    """
    for sock in _sockets(context):
        for level, option in ((socket.IPPROTO_IPV6, _IPV6_RECVERR), (socket.IPPROTO_IP, _IP_RECVERR)):
            try:
                sock.setsockopt(level, option, 0)
            except OSError:  # not that family, or not Linux: nothing was turned on
                pass


async def server_context(site: resource.Site, host: str, port: int) -> aiocoap.Context:
    """An aiocoap server context for ``site`` on UDP (host, port), hardened (harden() above).

    Every crumb CoAP endpoint starts this way (the issuer's, and a service's with CoapGuard)."""
    context = await aiocoap.Context.create_server_context(site, bind=(host, port), transports=["udp6"])
    harden(context)
    # aiocoap logs a warning for every unparsable datagram: anyone could fill the log with them.
    # Its errors still show; a deployment that wants the rest sets the level of "coap-server" itself.
    if context.log.level == logging.NOTSET:
        context.log.setLevel(logging.ERROR)
    return context
