"""A CPython client for the token endpoint: what ucrumb does on a device, for hosts and tests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ..issuer.protocol import Response, build_json_request, build_request, parse_response
from ..wire import CBOR_TYPES, JSON_TYPE


class Credentials:
    """The file `crumb device add` prints: {"device_id", "key" (hex), "issuer" (URL)}."""

    def __init__(self, device_id: str, key: bytes, issuer: str) -> None:
        self.device_id = device_id
        self.key = key
        self.issuer = issuer.rstrip("/")

    @classmethod
    def load(cls, path: str | Path) -> Credentials:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def from_json(cls, text: str) -> Credentials:
        doc = json.loads(text)
        return cls(doc["device_id"], bytes.fromhex(doc["key"]), doc["issuer"])


class IssuerClient:
    def __init__(self, creds: Credentials, *, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self.creds = creds
        self.http = client or httpx.Client(timeout=timeout)
        self.offset = 0  # issuer time - local time, learnt from every response

    def request(self, scopes: list, *, count: int = 1, audience: str | None = None, as_json: bool = False,
                now: int | None = None, nonce: bytes | None = None) -> Response:
        import time

        when = int(time.time()) + self.offset if now is None else now
        build = build_json_request if as_json else build_request
        body = build(self.creds.device_id, self.creds.key, scopes, count=count, audience=audience,
                     nonce=nonce, now=when)
        r = self.http.post(f"{self.creds.issuer}/token", content=body,
                           headers={"content-type": JSON_TYPE if as_json else CBOR_TYPES[0]})
        resp = parse_response(r.content, r.headers.get("content-type", ""))
        self.offset = resp.time - int(time.time())
        return resp

    def close(self) -> None:
        self.http.close()
