"""Fault: the MQTT broker (a real mosquitto) restarts under a running MqttConsumer.

The consumer keeps its paho client (which reconnects by itself) and its
verifier; the broker comes back on the same port, empty (it persists
nothing). While it is down, a publisher queues more envelopes, a forged one
among them, which paho may send once it is connected again.

What must hold: the consumer reconnects and subscribes again without help;
every message the handler sees was verified (forged, replayed, wrong-scope
and expired envelopes never reach it, before, during or after the restart);
an envelope delivered before the restart and published again after it is
``replayed``.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from crumb import SigningKey, Verifier, mint
from crumb.replay import MemoryReplayStore
from crumb.services.envelope import pack
from crumb.services.mqtt import MqttConsumer
from crumb.tooling.localservices import MosquittoServer

from .helpers import WAIT, wait_for

TOPIC = "sensors/temp01/readings"


def tok(key: SigningKey, resource: str = TOPIC, **kw) -> bytes:
    return mint(key, sub="dev-m", scope=[(resource, "publish")], **kw)


def test_the_consumer_reconnects_after_a_broker_restart_and_delivers_only_verified_messages():
    issuer, attacker = SigningKey.generate(), SigningKey.generate()
    delivered: list[tuple[bytes, str]] = []
    with MosquittoServer() as broker:
        # A consumer started for this test: no earlier life to fence off (its tokens come right after it starts).
        verifier = Verifier([issuer.public], replay=MemoryReplayStore(fence=False))
        consumer = MqttConsumer(verifier, lambda t, p, g: delivered.append((p, g.sub)),
                                "sensors/+/readings", host=broker.host, port=broker.port, keepalive=5)
        pub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="fault-publisher",
                          protocol=mqtt.MQTTv311)
        pub.reconnect_delay_set(min_delay=1, max_delay=2)
        consumer.client.reconnect_delay_set(min_delay=1, max_delay=2)
        consumer.start(timeout=WAIT)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        try:
            first = pack(tok(issuer), b"before")
            pub.publish(TOPIC, first, qos=1).wait_for_publish(WAIT)
            assert consumer.wait_processed(1, WAIT)

            broker.stop()
            wait_for(lambda: not consumer.client.is_connected(), "the consumer to lose the broker")
            # Published while the broker is down: paho queues them and may send them after reconnecting.
            pub.publish(TOPIC, pack(tok(attacker), b"forged-while-down"), qos=1)
            pub.publish(TOPIC, pack(tok(issuer), b"while-down"), qos=1)
            broker.start()  # the same port, no session or message kept

            # Reconnected and subscribed again: a probe with a fresh token gets through.
            probes = 0

            def probe_through() -> bool:
                nonlocal probes
                if any(p.startswith(b"probe") for p, _ in delivered):
                    return True
                if pub.is_connected():
                    probes += 1
                    pub.publish(TOPIC, pack(tok(issuer), b"probe%d" % probes), qos=1)
                return False

            wait_for(probe_through, "a message through the restarted broker", step=0.5)
            bad = [pack(tok(attacker), b"forged"), first,  # forged; published again after the restart
                   pack(tok(issuer, resource="sensors/other/readings"), b"wrong-scope"),
                   pack(tok(issuer, now=int(time.time()) - 3600), b"expired"), b"\xa1not an envelope"]
            for data in bad:
                pub.publish(TOPIC, data, qos=1).wait_for_publish(WAIT)
            pub.publish(TOPIC, pack(tok(issuer), b"after"), qos=1).wait_for_publish(WAIT)
            wait_for(lambda: any(p == b"after" for p, _ in delivered), "the last good message")
            # The message after the bad ones arrived, so were they (one connection, in order);
            # wait until each was processed too.
            wait_for(lambda: sum(consumer.rejected.values()) >= len(bad), "the bad messages' verdicts")
        finally:
            pub.loop_stop()
            pub.disconnect()
            consumer.stop()

    payloads = [p for p, _ in delivered]
    assert payloads[0] == b"before" and payloads[-1] == b"after"
    assert all(sub == "dev-m" for _, sub in delivered)
    # Every delivered message is one the issuer's key signed, once each.
    assert not [p for p in payloads if b"forged" in p or p in (b"wrong-scope", b"expired")]
    assert len(payloads) == len(set(payloads))
    assert set(payloads) <= {b"before", b"after", b"while-down"} | {b"probe%d" % i for i in range(1, probes + 1)}
    # Each bad one refused with its code (the forged envelope queued while down is counted if paho sent it).
    rejected = dict(consumer.rejected)
    assert rejected.get("unknown_key") in (1, 2), rejected
    assert {k: v for k, v in rejected.items() if k != "unknown_key"} == {
        "replayed": 1, "scope_denied": 1, "expired": 1, "malformed": 1}, rejected
    assert consumer.handler_errors == 0
