"""Fault: a verifier restarts and forgets every use it had counted (the restart fence).

A verifier with the default in-memory replay store runs as a real uvicorn
process (verifier_app.py), is killed with SIGKILL and started again on the
same port. The invariant is the replay store's: a token spent before the
restart is never accepted after it. The store's fence (refuse tokens issued
before the store began) is what keeps it, whatever the issuer's clock.

A restarted store refuses every token a verifier could have accepted before it
began: issued before it, in its very second, or up to its leeway after (an issuer
clock that far ahead). This file found the last two as defects (issue 16); they
are plain regression cases now. A new store thus refuses all tokens for its
leeway + 1 s: the tests wait that long before presenting fresh ones.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from crumb import SigningKey, Verifier, mint
from crumb.errors import Replayed
from crumb.replay import DEFAULT_LEEWAY, MemoryReplayStore
from crumb.services.replay_redis import RedisReplayStore
from crumb.tooling.localservices import RedisServer, UvicornProcess

HERE = Path(__file__).parent
PATH, RESOURCE = "/sensors/temp01/readings", "/sensors/temp01"

def bearer(token: bytes) -> dict[str, str]:
    import base64

    return {"Authorization": "Bearer " + base64.urlsafe_b64encode(token).rstrip(b"=").decode()}


def next_second() -> None:
    time.sleep(1.01 - time.time() % 1)


def past_the_fence(began: float, leeway: int) -> None:
    """Wait until a store that began by ``began`` lets fresh tokens through (its fence: began's second + leeway)."""
    time.sleep(max(0.0, int(began) + leeway + 1.01 - time.time()))


class VerifierProcess(UvicornProcess):
    def kill9(self) -> None:
        """SIGKILL, then start again on the same port (held by this object meanwhile)."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.stop()  # the process is gone: only drops the handle
        self.start()


@pytest.fixture
def service(request):
    issuer = SigningKey.generate()
    env = {"CRUMB_FAULT_ISSUER": issuer.public.raw.hex(), **getattr(request, "param", {})}
    with VerifierProcess("verifier_app:app", app_dir=HERE, env=env, name="verifier") as proc, \
            httpx.Client(base_url=proc.url, timeout=30) as client:
        yield issuer, proc, client


def post(client: httpx.Client, token: bytes) -> tuple[int, str]:
    r = client.post(PATH, headers=bearer(token))
    return r.status_code, ("" if r.status_code == 201 else r.json()["code"])


def test_a_token_spent_before_a_restart_is_refused_after_it(service):
    issuer, proc, client = service
    past_the_fence(time.time(), DEFAULT_LEEWAY)  # the service just started: its first fence
    spent = [mint(issuer, sub="dev-f", scope=[(RESOURCE, "publish")], uses=uses) for uses in (1, 3)]
    for tok in spent:
        assert post(client, tok) == (201, "")
    pid = client.post(PATH, headers=bearer(spent[1])).json()["pid"]  # a second of its three uses
    next_second()  # the same-second restart is a case below
    proc.kill9()
    began = time.time()  # the new process's store began by now
    for tok in spent:
        assert post(client, tok) == (401, "replayed")
    past_the_fence(began, DEFAULT_LEEWAY)
    fresh = mint(issuer, sub="dev-f", scope=[(RESOURCE, "publish")])
    r = client.post(PATH, headers=bearer(fresh))
    assert r.status_code == 201 and r.json()["pid"] != pid  # served, by the new process
    assert post(client, fresh) == (401, "replayed")


@pytest.mark.parametrize("service", [{"CRUMB_FAULT_LEEWAY": "3"}], indirect=True)
def test_the_fence_holds_with_the_issuer_clock_ahead_within_the_leeway(service):
    """Was a defect: the fence was the store's start alone, so this token's iat was past it."""
    issuer, proc, client = service
    past_the_fence(time.time(), 3)  # the service just started: its first fence
    # The issuer's clock is 2 s ahead of the verifier's: within its 3 s leeway, so accepted.
    ahead = mint(issuer, sub="dev-f", scope=[(RESOURCE, "publish")], now=int(time.time()) + 2, ttl=300)
    assert post(client, ahead) == (201, "")
    assert post(client, ahead) == (401, "replayed")
    next_second()
    proc.kill9()
    assert post(client, ahead) == (401, "replayed")


# The same-second case needs the clock held still, so it runs on the stores directly: the
# in-memory store as a restarted verifier makes it, and Redis restarted for real.

def test_a_verifier_restarted_within_the_second_refuses_what_was_spent_in_it():
    """Was a defect: the fence let its own whole second through."""
    issuer, now = SigningKey.generate(), 1_800_000_000
    tok = mint(issuer, scope=[(RESOURCE, "publish")], now=now)
    t = [now - 100]  # the first process started long before
    first = Verifier([issuer.public], clock=lambda: t[0], replay=MemoryReplayStore(clock=lambda: t[0]))
    t[0] = now + 0.2
    first.verify(tok, RESOURCE, "publish")
    t[0] = now + 0.7
    restarted = Verifier([issuer.public], clock=lambda: t[0], replay=MemoryReplayStore(clock=lambda: t[0]))
    with pytest.raises(Replayed):
        restarted.verify(tok, RESOURCE, "publish")


def test_redis_restarted_within_the_second_refuses_what_was_spent_in_it():
    """Was a defect: the fence let its own whole second through."""
    issuer, now = SigningKey.generate(), 1_800_000_000
    tok = mint(issuer, scope=[(RESOURCE, "publish")], now=now)
    with RedisServer() as redis_server:
        t = [now - 100]  # the data set began long before
        store = RedisReplayStore(redis_server.url, clock=lambda: t[0])
        verifier = Verifier([issuer.public], clock=lambda: t[0], replay=store)
        t[0] = now + 0.2
        verifier.verify(tok, RESOURCE, "publish")
        redis_server.stop()
        redis_server.start()  # empty: every use forgotten
        t[0] = now + 0.7
        try:
            with pytest.raises(Replayed):
                verifier.verify(tok, RESOURCE, "publish")
        finally:
            store.close()
