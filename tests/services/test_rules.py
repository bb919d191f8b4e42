"""Request → (resource, operation) rules, and the bearer header parser."""

from __future__ import annotations

import pytest

from crumb.errors import Malformed, TooLarge
from crumb.services.middleware import PUBLIC, MissingToken, RequestInfo, Route, Routes, bearer_token
from crumb.services.middleware.rules import canonical_path

RULE = Routes(
    Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"),
    Route("/sensors/{sensor}", methods={"GET": "read", "delete": "delete"}),
    Route("/files/{rest:path}", resource="/files/{rest}"),
    Route("/healthz", public=True),
)


def decide(method: str, path: str):
    return RULE(RequestInfo(method, path))


def test_templates_map_to_resources_and_operations():
    assert decide("POST", "/sensors/temp01/readings") == ("/sensors/temp01", "publish")
    assert decide("GET", "/sensors/temp01/readings") == ("/sensors/temp01", "publish")
    assert decide("GET", "/sensors/temp01") == ("/sensors/temp01", "read")
    assert decide("DELETE", "/sensors/temp01") == ("/sensors/temp01", "delete")
    assert decide("PUT", "/files/a/b/c.txt") == ("/files/a/b/c.txt", "PUT")
    assert decide("GET", "/healthz") is PUBLIC


def test_no_rule_is_a_refusal_never_a_fall_through():
    assert decide("GET", "/other") is None
    assert decide("GET", "/healthz/x") is None
    assert decide("POST", "/sensors/temp01") is None  # path known, method not mapped
    assert decide("GET", "/sensors/a/b") is None  # {sensor} is one segment


def test_canonical_paths_only():
    assert canonical_path("/") and canonical_path("/a/b")
    for bad in ("", "a", "//", "/a//b", "/a/./b", "/a/../b", "/a/", "/..",
                # what a service further on may still decode or normalise (PROTOCOL.md §4.2)
                "/a%2e%2e/b", "/a/..\\b", "/a/.\t./b", "/a\x00", "/a/..;/b", "/a/.;x"):
        assert not canonical_path(bad), bad
    assert canonical_path("/a/.b/..c") and canonical_path("/sensors/t1*")


@pytest.mark.parametrize("args, kw, match", [
    (("sensors",), {}, "must start with '/'"),
    (("/a/{x}/{x}",), {}, "repeats"),
    (("/a/{x",), {}, "braces"),
    (("/a/{x}",), {"resource": "/r/{y}"}, "not captured"),
    (("/a",), {"operation": "read", "methods": {"GET": "read"}}, "not both"),
    (("/a",), {"public": True, "operation": "read"}, "requires nothing"),
])
def test_bad_routes_are_refused_at_configuration(args, kw, match):
    with pytest.raises(ValueError, match=match):
        Route(*args, **kw)


def test_headers_are_decoded_lazily_and_folded():
    info = RequestInfo("GET", "/", "", [(b"X-A", b"1"), (b"x-a", b"2"), (b"host", b"h")])
    assert info.headers == {"x-a": "1, 2", "host": "h"}


def test_bearer_header():
    assert bearer_token(["Bearer AQID"]) == b"\x01\x02\x03"
    assert bearer_token(["bearer   AQID  "]) == b"\x01\x02\x03"
    with pytest.raises(MissingToken):
        bearer_token([])
    with pytest.raises(MissingToken, match="not Bearer"):
        bearer_token(["Basic dXNlcjpwYXNz"])
    for bad in (["Bearer"], ["Bearer "], ["Bearer AQ=="], ["Bearer AQID, Bearer AQID"], ["Bearer a", "Bearer b"]):
        with pytest.raises(Malformed):
            bearer_token(bad)
    with pytest.raises(TooLarge):
        bearer_token(["Bearer " + "A" * 6000])
