"""The MQTT consumer against a real Mosquitto broker."""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt
import pytest

from crumb import SigningKey, Verifier, mint
from crumb.replay import MemoryReplayStore
from crumb.services.envelope import pack
from crumb.services.mqtt import MqttConsumer
from crumb.services.replay_redis import RedisReplayStore

TOPIC = "sensors/temp01/readings"
# Seconds to wait for messages to go through: generous, since a loaded machine can be slow,
# and waiting ends as soon as they are through; only a message that never arrives takes this long.
WAIT = 60.0


@pytest.fixture
def publisher(mosquitto):
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()

    def publish(topic: str, data: bytes) -> None:
        client.publish(topic, data, qos=1).wait_for_publish(WAIT)

    yield publish
    client.disconnect()
    client.loop_stop()


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes, object]] = []

    def __call__(self, topic, payload, grant) -> None:
        self.items.append((topic, payload, grant))


def consumer(mosquitto, issuer, inbox, **kw) -> MqttConsumer:
    kw.setdefault("replay", MemoryReplayStore(fence=False))
    verifier = Verifier([issuer.public], replay=kw.pop("replay"))
    return MqttConsumer(verifier, inbox, kw.pop("topics", "sensors/+/readings"), host=mosquitto.host,
                        port=mosquitto.port, **kw)


def tok(issuer, resource=TOPIC, op="publish", **kw) -> bytes:
    return mint(issuer, sub="dev-0001", scope=[(resource, op)], **kw)


def test_verified_messages_are_delivered_with_their_claims(mosquitto, issuer, publisher):
    inbox = Inbox()
    with consumer(mosquitto, issuer, inbox) as c:
        publisher(TOPIC, pack(tok(issuer), b'{"t": 21.5}'))
        assert c.wait_processed(1, WAIT)
    [(topic, payload, grant)] = inbox.items
    assert (topic, payload) == (TOPIC, b'{"t": 21.5}')
    assert grant.sub == "dev-0001" and grant.resource == TOPIC and grant.operation == "publish"
    assert c.stats() == {"delivered": 1, "rejected": {}, "handler_errors": 0}


def test_rejected_messages_are_counted_logged_and_never_delivered(mosquitto, issuer, publisher, caplog):
    inbox = Inbox()
    good = tok(issuer)
    bad = {
        "malformed": b"\xa1not an envelope",
        "scope_denied": pack(tok(issuer, resource="sensors/temp02/readings"), b"x"),
        "expired": pack(tok(issuer, now=int(time.time()) - 3600), b"x"),
        "unknown_key": pack(tok(SigningKey.generate()), b"x"),
        "too_large": pack(good, b"x" * 300_000),
    }
    caplog.set_level(logging.WARNING, logger="crumb.services.mqtt")
    with consumer(mosquitto, issuer, inbox) as c:
        publisher(TOPIC, pack(good, b"first"))
        for data in bad.values():
            publisher(TOPIC, data)
        publisher(TOPIC, pack(tok(issuer, op="read"), b"x"))  # wrong operation
        publisher(TOPIC, pack(good, b"again"))  # the same token republished
        assert c.wait_processed(len(bad) + 3, WAIT)
    assert [p for _, p, _ in inbox.items] == [b"first"]
    assert c.rejected == {**{code: 1 for code in bad}, "scope_denied": 2, "replayed": 1}
    logged = [r for r in caplog.records if r.name == "crumb.services.mqtt"]
    assert sorted(r.crumb_code for r in logged) == sorted(list(bad) + ["scope_denied", "replayed"])
    assert all(r.crumb_code in r.getMessage() for r in logged)


def test_resource_and_operation_are_configurable(mosquitto, issuer, publisher):
    inbox = Inbox()
    with consumer(mosquitto, issuer, inbox, resource=lambda t: "/" + t.rsplit("/", 1)[0], operation="ingest") as c:
        publisher(TOPIC, pack(tok(issuer, resource="/sensors/temp01", op="ingest"), b"1"))
        publisher(TOPIC, pack(tok(issuer), b"2"))
        assert c.wait_processed(2, WAIT)
    assert [p for _, p, _ in inbox.items] == [b"1"] and c.rejected == {"scope_denied": 1}


def test_a_failing_handler_is_counted_and_the_consumer_goes_on(mosquitto, issuer, publisher):
    seen = []

    def handler(topic, payload, grant):
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("handler bug")

    with consumer(mosquitto, issuer, handler) as c:
        publisher(TOPIC, pack(tok(issuer), b"boom"))
        publisher(TOPIC, pack(tok(issuer), b"ok"))
        assert c.wait_processed(2, WAIT)
    assert seen == [b"boom", b"ok"] and c.handler_errors == 1 and c.delivered == 1


def test_two_replicas_sharing_redis_handle_each_message_once(mosquitto, issuer, publisher, redis_server):
    a, b = Inbox(), Inbox()
    prefix = f"mqtt{time.time_ns()}:"
    replicas = [consumer(mosquitto, issuer, inbox, replay=RedisReplayStore(redis_server.url, prefix=prefix,
                                                                              fence=False))
                for inbox in (a, b)]
    for c in replicas:
        c.start()
    try:
        for i in range(20):  # both replicas receive every message (plain subscriptions)
            publisher(TOPIC, pack(tok(issuer), str(i).encode()))
        assert all(c.wait_processed(20, WAIT) for c in replicas)
    finally:
        for c in replicas:
            c.stop()
    handled = sorted(int(p) for _, p, _ in a.items + b.items)
    assert handled == list(range(20))
    assert sum(c.rejected["replayed"] for c in replicas) == 20


def test_start_fails_clearly_without_a_broker(issuer):
    from crumb.tooling.localservices import RefusingPort

    with RefusingPort() as down:
        c = MqttConsumer(Verifier([issuer.public]), Inbox(), TOPIC, port=down.port)
        with pytest.raises(ConnectionRefusedError):
            c.start(timeout=1)
