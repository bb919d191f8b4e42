"""Targets for the key-set parsers: ``GET /keys`` documents, key files, and keys fetched over HTTP.

Everywhere keys are read, a bad document or file may raise only the key
modules' typed errors (``KeySetError``, ``KeyFileError``, ``KeyFetchError``),
and a verifier holding a good key set keeps it when the issuer later serves a
bad one: the token still verifies.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...errors import CrumbError
from ...keys import KeyFileError, load_public_key, load_signing_key
from ...replay import MemoryReplayStore
from ...verify import Verifier
from . import fixtures as fx
from .harness import Finding


def keys_document() -> dict:
    """A ``GET /keys`` document for the fixed keys, as the issuer writes it."""
    return {"keys": [{**fx.ISSUER.public.to_jwk(), "alg": "EdDSA", "use": "sig", "status": "current"},
                     {**fx.EPHEMERAL[2].public.to_jwk(), "alg": "EdDSA", "use": "sig", "status": "retired"}],
            "nodes": [{"name": n, **k.public.to_jwk()} for n, k in zip(fx.HOP_NAMES, fx.HOPS, strict=True)],
            "issuer": "crumb-fuzz"}


def keyset_seeds() -> dict[str, bytes]:
    doc = keys_document()
    return {
        "keys-document": json.dumps(doc, indent=1).encode(),
        "plain-jwk-set": json.dumps({"keys": [fx.ISSUER.public.to_jwk()]}).encode(),
        "public-jwk": json.dumps(fx.ISSUER.public.to_jwk()).encode(),
        "private-jwk": json.dumps(fx.ATTENUATOR.to_jwk()).encode(),
        "previous": json.dumps({"keys": [{**fx.HOPS[0].public.to_jwk(), "status": "previous"}], "nodes": []}).encode(),
    }


def _keyset_setup() -> Callable[[bytes], None]:
    from ...services.keyset import KeySetError, load_file, parse_json

    tmp = tempfile.TemporaryDirectory(prefix="crumb-fuzz-keys-")
    path = Path(tmp.name) / "key.json"

    def run(data: bytes) -> None:
        try:
            parse_json(data)
        except KeySetError:
            pass
        path.write_bytes(data)
        for load in (load_public_key, load_signing_key, load_file):
            try:
                load(path)
            except (KeyFileError, KeySetError):
                pass

    run.close = tmp.cleanup  # type: ignore[attr-defined]
    return run


def _keyfetch_setup() -> Callable[[bytes], None]:
    import httpx

    from ...services.keyfetch import FetchedKeys, KeyFetchError
    from ...services.keyset import KeySetError, parse_json

    responder = fx.Responder().start()
    client = httpx.Client(timeout=5.0, follow_redirects=False)
    good = _http_200(json.dumps(keys_document()).encode())
    token = fx.valid_tokens()["chain3"]
    url = responder.url + "/keys"

    def run(data: bytes) -> None:
        # A verifier that fetched a good set, then finds the issuer serving `data`: once when
        # fetched directly, once more when the verifier refreshes (max_age 0: on every lookup).
        keys = FetchedKeys(url, min_interval=0, max_age=0, client=client)
        responder.response = good
        keys.fetch()
        responder.response = _http_200(data)
        try:
            keys.fetch()
        except (KeyFetchError, KeySetError):  # fetch()'s contract: unavailable, or not a usable key set
            pass
        clock = lambda: fx.NOW
        verifier = Verifier([], resolver=keys, clock=clock, replay=MemoryReplayStore(16, fence=False, clock=clock))
        try:
            verifier.verify(token, "/sensors/temp01", "read")
        except CrumbError as e:
            try:
                parse_json(data)
            except KeySetError:
                raise Finding(f"the last good key set was dropped for a bad document: {e}") from None

    def close() -> None:
        client.close()
        responder.close()

    run.close = close  # type: ignore[attr-defined]
    return run


def _http_200(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body
