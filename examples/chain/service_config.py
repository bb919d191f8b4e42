"""What the three chain services share: configuration from the environment, and the verifier.

    CRUMB_ISSUER_PUB   issuer public key file(s), comma-separated (pinned keys), or
    CRUMB_KEYS_URL     the issuer's GET /keys URL (fetched, refreshed on an unknown kid)
    CRUMB_NODE_PUBS    node public key files, comma-separated (for tokens naming hops by kid;
                       with CRUMB_KEYS_URL they come from the issuer's "nodes" instead)
    CRUMB_NODE_KEY     this service's private node key file (hops that attest; it also reads the
                       cnf of proof-of-possession tokens whose first hop this service is)
    CRUMB_HOP          this service's hop name ("" = the chain's destination)
    CRUMB_NEXT         base URL of the next hop
    CRUMB_REDIS        redis:// URL of the shared replay store (default: in memory, this process only)
    CRUMB_SERVICE_LOG  SQLite file of this service's log: every token accepted or refused, hash-chained
                       (docs/audit-trail.md; default: no log)
"""

from __future__ import annotations

import os

from crumb import Verifier, load_signing_key
from crumb.replay import MemoryReplayStore
from crumb.services.keyfetch import FetchedKeys
from crumb.services.keyset import pinned
from crumb.services.middleware import Route, Routes
from crumb.services.replay_redis import RedisReplayStore
from crumb.services.servicelog import ServiceLog

# Every service maps a reading upload to the same request: publish on the sensor.
RULE = Routes(
    Route("/sensors/{sensor}/readings", resource="/sensors/{sensor}", operation="publish"),
    Route("/healthz", public=True),
)


def env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(",") if p]


def hop(default: str | None) -> str | None:
    value = os.environ.get("CRUMB_HOP", default or "")
    return value or None


def verifier(default_hop: str | None) -> Verifier:
    keys = pinned(env_list("CRUMB_ISSUER_PUB"), env_list("CRUMB_NODE_PUBS"))
    url = os.environ.get("CRUMB_KEYS_URL")
    if not keys.issuer and not url:
        raise SystemExit("set CRUMB_ISSUER_PUB (key files) or CRUMB_KEYS_URL (the issuer's GET /keys)")
    redis_url = os.environ.get("CRUMB_REDIS")
    replay = RedisReplayStore(redis_url) if redis_url else MemoryReplayStore()
    node = os.environ.get("CRUMB_NODE_KEY")
    return Verifier(keys.issuer.values(), node_keys=keys.nodes.values(), replay=replay,
                    hop=hop(default_hop), resolver=FetchedKeys(url) if url else None,
                    pop_key=load_signing_key(node) if node else None)


def node_key():
    path = os.environ.get("CRUMB_NODE_KEY")
    if not path:
        raise SystemExit("set CRUMB_NODE_KEY: this hop attests with its node key")
    return load_signing_key(path)


def next_hop() -> str:
    url = os.environ.get("CRUMB_NEXT")
    if not url:
        raise SystemExit("set CRUMB_NEXT: the base URL of the next hop")
    return url.rstrip("/")


def service_log(name: str, key=None) -> ServiceLog | None:
    """This service's log, if CRUMB_SERVICE_LOG names its file; recorded under ``name`` (and its node key's kid)."""
    path = os.environ.get("CRUMB_SERVICE_LOG")
    return ServiceLog(path, service=name, node_key=key.public if key is not None else None) if path else None
