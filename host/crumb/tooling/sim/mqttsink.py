"""The simulation's MQTT service: crumb's MqttConsumer, one JSON line per message.

    python -m crumb.tooling.sim.mqttsink --host H --port P --keys URL [--redis URL] [--topic T]

It verifies every envelope on the topic (resource "/" + topic, operation
publish) with keys fetched from the issuer, like any verifying service, and
prints ``{"mono", "device", "topic", "code", "digest"}`` for each message
(``code`` "ok" when accepted; ``mono`` is CLOCK_MONOTONIC, which the
simulator shares). It prints ``ready`` once subscribed. Its own process, so
its CPU counts as a service's, not the simulator's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keys", required=True, help="the issuer's GET /keys URL")
    ap.add_argument("--redis", help="redis:// URL of a shared replay store (default: in memory)")
    ap.add_argument("--topic", default="telemetry/+")
    a = ap.parse_args(argv)

    from ...replay import MemoryReplayStore
    from ...services.keyfetch import FetchedKeys
    from ...services.mqtt import MqttConsumer
    from ...verify import Verifier

    replay = MemoryReplayStore()
    if a.redis:
        from ...services.replay_redis import RedisReplayStore

        replay = RedisReplayStore(a.redis)
    verifier = Verifier([], resolver=FetchedKeys(a.keys), replay=replay)
    lock = threading.Lock()

    def out(doc: dict) -> None:
        with lock:
            sys.stdout.write(json.dumps(doc) + "\n")
            sys.stdout.flush()

    class Sink(MqttConsumer):
        def process(self, topic, data):
            before = dict(self.rejected)
            grant = super().process(topic, data)
            if grant is not None:
                code = "ok"
            else:
                code = next((k for k, v in self.rejected.items() if v != before.get(k, 0)), "error")
            out({"mono": time.monotonic(), "device": topic.rsplit("/", 1)[-1], "topic": topic, "code": code,
                 "digest": hashlib.sha256(data).hexdigest()[:16]})
            return grant

    sink = Sink(verifier, lambda topic, payload, grant: None, a.topic, host=a.host, port=a.port,
                resource=lambda topic: "/" + topic)
    try:
        sink.start()
    except (OSError, ConnectionError) as e:
        print(f"cannot subscribe on {a.host}:{a.port}: {e}", file=sys.stderr)
        return 1
    out_ready = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: out_ready.set())
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    out_ready.wait()
    sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
