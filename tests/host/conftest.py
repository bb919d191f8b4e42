import pytest

from crumb import SigningKey, Verifier
from crumb.replay import DEFAULT_LEEWAY, MemoryReplayStore

NOW = 1_800_000_000
RES, OP = "/sensors/temp01", "read"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def issuer():
    return SigningKey(bytes(range(32)))


@pytest.fixture
def nodes():
    """Keys of a three-hop chain: gateway → ingest → storage."""
    return {name: SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(("gateway", "ingest", "storage"))}


@pytest.fixture
def make_verifier(issuer, nodes, clock):
    def make(**kw):
        kw.setdefault("replay", MemoryReplayStore(fence=False, clock=clock, leeway=kw.get("leeway", DEFAULT_LEEWAY)))
        kw.setdefault("node_keys", [k.public for k in nodes.values()])
        return Verifier([issuer.public], clock=clock, **kw)
    return make
