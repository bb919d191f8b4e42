"""MQTT consumer: verify every envelope before the application sees its payload.

    def handle(topic: str, payload: bytes, grant: Grant) -> None: ...

    consumer = MqttConsumer(verifier, handle, "sensors/+/readings", host="broker", port=1883)
    consumer.start()      # connected and subscribed when it returns
    ...
    consumer.stop()

Each message is an envelope ``[token, payload]`` (envelope.py). The token is
verified for resource = the topic (or ``resource(topic)``) and operation
``publish`` (configurable). A message that fails is never handed to the
handler: it is counted under its code in ``rejected`` and logged with the
code. Uses are consumed like any request, so a duplicate delivery (QoS 1
redelivery, or an attacker republishing a captured message) is ``replayed``:
each token's payload is handled at most its number of uses.

Nothing raised while checking a message reaches paho's network thread (where
it would end the loop and, with it, the consumer): an unexpected exception
(a bug, or an application ``resource``/``facts`` callable failing) rejects
the message under ``internal_error`` and is logged with its traceback.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import paho.mqtt.client as mqtt

from ..errors import CrumbError, InternalError
from ..verify import Verifier
from . import envelope
from .grant import Grant
from .servicelog import EVENT_ACCEPTED, EVENT_REFUSED, ServiceLog

log = logging.getLogger("crumb.services.mqtt")

#: ``rejected`` counts a message whose check raised something other than a CrumbError under this code.
INTERNAL_ERROR = InternalError.code

Handler = Callable[[str, bytes, Grant], Any]


class MqttConsumer:
    """Subscribe, verify, dispatch. Counters: ``delivered``, ``rejected`` (by code), ``handler_errors``."""

    def __init__(self, verifier: Verifier, handler: Handler, topics: str | Sequence[str], *,
                 host: str = "127.0.0.1", port: int = 1883, qos: int = 1,
                 operation: str = "publish", resource: Callable[[str], str] | None = None,
                 facts: Callable[[str, bytes], Mapping[str, Any] | None] | None = None,
                 client_id: str | None = None, keepalive: int = 30,
                 max_payload: int = envelope.MAX_PAYLOAD_BYTES,
                 service_log: ServiceLog | None = None) -> None:
        self.verifier = verifier
        # Every decision recorded (servicelog.py); a message whose acceptance cannot be
        # recorded is rejected as store_unavailable and never reaches the handler.
        self.service_log = service_log
        self.handler = handler
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.host, self.port, self.qos, self.keepalive = host, port, qos, keepalive
        self.operation = operation
        self.resource = resource
        self.facts = facts
        self.max_payload = max_payload
        self.delivered = 0
        self.rejected: Counter[str] = Counter()
        self.handler_errors = 0
        self._done = threading.Condition()
        self._subscribed = threading.Event()
        self._pending: set[int] = set()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"crumb-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # -- processing (independent of the network: usable with any MQTT client)
    def process(self, topic: str, data: bytes) -> Grant | None:
        """Verify one message and hand it to the handler; the Grant, or None if it was rejected."""
        token: bytes | None = None
        resource: str | None = None
        try:
            token, payload, proof = envelope.unpack_proof(data, max_token=self.verifier.max_token_bytes,
                                                          max_payload=self.max_payload)
            resource = self.resource(topic) if self.resource is not None else topic
            facts = self.facts(topic, payload) if self.facts is not None else None
            pop = None
            if proof is not None:  # a PoP token's first hop checks it (PROTOCOL.md §12.1)
                from ..pop import PopRequest
                pop = PopRequest(proof, "PUBLISH", topic, payload)
            verified = self.verifier.verify(token, resource, self.operation, facts=facts, pop=pop)
        except CrumbError as e:
            self.rejected[e.code] += 1
            log.warning("rejected message on %r: %s: %s", topic, e.code, e.message,
                        extra={"crumb_code": e.code, "topic": topic})
            self._record_refused(token, resource, e.code, e.message)
            self._finished()
            return None
        except Exception:
            # Fail closed, and keep the network thread alive: the message is not handled.
            self.rejected[INTERNAL_ERROR] += 1
            log.exception("rejected message on %r: %s: checking it raised", topic, INTERNAL_ERROR,
                          extra={"crumb_code": INTERNAL_ERROR, "topic": topic})
            self._record_refused(token, resource, INTERNAL_ERROR, "checking the message raised")
            self._finished()
            return None
        grant = Grant(token, verified, resource, self.operation)
        if self.service_log is not None:
            try:
                self.service_log.log(token=token, decision=EVENT_ACCEPTED, code=None, resource=resource,
                                     operation=self.operation, hops=grant.attested)
            except CrumbError as e:  # fail closed: nothing is handled without its record
                self.rejected[e.code] += 1
                log.error("rejected message on %r: %s: %s", topic, e.code, e.message,
                          extra={"crumb_code": e.code, "topic": topic})
                self._finished()
                return None
        try:
            self.handler(topic, payload, grant)
        except Exception:
            self.handler_errors += 1
            log.exception("handler failed for a verified message on %r (sub %r)", topic, grant.sub)
        else:
            self.delivered += 1
        self._finished()
        return grant

    def _record_refused(self, token: bytes | None, resource: str | None, code: str, message: str) -> None:
        if self.service_log is None:
            return
        try:
            self.service_log.log(token=token, decision=EVENT_REFUSED, code=code, resource=resource,
                                 operation=self.operation, message=message)
        except CrumbError as failed:  # the message is rejected either way; only its record is lost
            log.error("the service log could not record a rejection (%s): %s", code, failed.message)

    @property
    def processed(self) -> int:
        return self.delivered + self.handler_errors + sum(self.rejected.values())

    def _finished(self) -> None:
        with self._done:
            self._done.notify_all()

    def wait_processed(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` messages have been processed in total (or the timeout)."""
        with self._done:
            return self._done.wait_for(lambda: self.processed >= count, timeout)

    # -- paho callbacks (network thread)
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            return
        # (Re)subscribe on every connect: a clean session forgets subscriptions.
        result, mid = client.subscribe([(t, self.qos) for t in self.topics])
        if result == mqtt.MQTT_ERR_SUCCESS:
            self._pending.add(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list,
                      properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("MQTT broker refused a subscription to %s: %s", self.topics, reason_codes)
            return
        self._pending.discard(mid)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.process(message.topic, message.payload)

    # -- lifecycle
    def start(self, timeout: float = 5.0) -> MqttConsumer:
        """Connect and subscribe; returns once the broker acknowledged the subscriptions."""
        self.client.connect(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise ConnectionError(f"no subscription to {self.topics} on {self.host}:{self.port} "
                                  f"within {timeout} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict:
        return {"delivered": self.delivered, "rejected": dict(self.rejected),
                "handler_errors": self.handler_errors}
