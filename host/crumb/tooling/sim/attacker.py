"""The attacker: sits on the proxy, captures what devices send, and tries to misuse it.

Its captures come from the proxy's hooks: each device's last accepted reading
(the token, the path, the body), its last poll of the command service, its
last successful ``POST /token`` body, the operator's last command, and each
MQTT envelope published. At each attempt of the plan (time, kind, victim) it
takes the victim's capture and sends its forgery straight to the service,
as anyone on the network could, then records the answer:

==========================  ===========================================  ==================
kind                        what                                         must be refused as
==========================  ===========================================  ==================
replay                      the reading's token again, at the gateway     replayed
other_resource              the same token for another sensor             scope_denied
other_operation             a poll token (read) used to open the valve    scope_denied
other_service               the token at ``archive``, outside its chain   chain_invalid
skip_hop                    the token straight to ingest                  chain_incomplete
flip                        one byte of its signature flipped             bad_signature
forge                       its claims signed with the attacker's key     unknown_key
token_request_replay        the device's POST /token again, at the issuer replayed
command_replay              the operator's command again                  replayed
mqtt_replay                 an MQTT envelope published again              replayed
==========================  ===========================================  ==================

Each attempt becomes an ``attack`` event: kind, target, outcome
(``refused`` or ``accepted``), the code it was refused with, the code the
kind must be refused with, and the victim.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from typing import Any

from ...issuer import protocol
from .events import Recorder
from .plan import ATTACK_SPEC, Attempt, Plan, expected_code
from .proxy import Link

WAIT_FOR_CAPTURE = 5.0  # seconds an attempt waits for its victim's first capture


def _token(auth: str) -> bytes | None:
    if not auth.startswith("Bearer "):
        return None
    text = auth[7:].strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bearer(token: bytes) -> str:
    return "Bearer " + base64.urlsafe_b64encode(token).rstrip(b"=").decode()


class Attacker:
    def __init__(self, plan: Plan, rec: Recorder, urls: dict[str, str]) -> None:
        self.plan = plan
        self.rec = rec
        self.urls = urls
        self.captures: dict[str, dict[str, Any]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sim-attacker", daemon=True)
        self.ids = [d.id for d in plan.devices]
        self._key = None

    # -- capture (called on the proxy's thread: store and return) ----------------------------
    def on_http(self, link: Link, method: str, path: str, headers: dict, body: bytes, status: int,
                rbody: bytes) -> None:
        mine = self.captures.setdefault(link.device, {})
        if link.service == "issuer":
            if status == 200:
                mine["token_request"] = body
            return
        token = _token(headers.get("authorization", ""))
        if token is None or not 200 <= status < 300:
            return
        if link.service == "gateway":
            mine["reading"] = (token, path, body, headers.get("crumb-pop"))
        elif link.service == "commands":
            mine["poll" if method == "GET" else "command"] = (token, path)

    def on_mqtt(self, link: Link, topic: str, payload: bytes) -> None:
        self.captures.setdefault(link.device, {})["envelope"] = (topic, payload)

    # -- attempts ----------------------------------------------------------------------------------
    def _run(self) -> None:
        for a in self.plan.attempts:
            if self.stop.wait(max(0.0, a.at - self.rec.now())):
                return
            try:
                self.attempt(a)
            except Exception as e:  # noqa: BLE001 - an attempt that could not be made is recorded, not fatal
                self.rec.emit("attack_skipped", attack=a.kind, victim=a.victim, why=repr(e)[:200])

    def _capture(self, victim: str, what: str):
        deadline = time.monotonic() + WAIT_FOR_CAPTURE
        while True:
            got = self.captures.get(victim, {}).get(what)
            if got is not None or time.monotonic() > deadline or self.stop.is_set():
                return got
            time.sleep(0.05)

    def attempt(self, a: Attempt) -> None:
        needs = {"other_operation": "poll", "token_request_replay": "token_request", "command_replay": "command",
                 "mqtt_replay": "envelope"}.get(a.kind, "reading")
        cap = self._capture(a.victim, needs)
        if cap is None:
            self.rec.emit("attack_skipped", attack=a.kind, victim=a.victim, why=f"no {needs} captured from {a.victim}")
            return
        _, target, _, _ = ATTACK_SPEC[a.kind]
        expected = expected_code(self.plan.sc, a.kind)
        extra = {}
        if a.kind == "mqtt_replay":
            status, code = self._mqtt_replay(*cap)
            import hashlib

            extra["digest"] = hashlib.sha256(cap[1]).hexdigest()[:16]  # its copies are not the device's calls
        elif a.kind == "token_request_replay":
            status, code = self._issuer(cap)
        else:
            method, path, auth, body = self._forgery(a, cap)
            proof = cap[3] if len(cap) > 3 else None
            if proof is not None and a.kind == "replay":
                body = body + b" "  # its own reading: the captured proof is for the device's
            status, code = self._send(target, method, path, auth, body, proof)
        outcome = "accepted" if 200 <= status < 300 else "refused"
        self.rec.emit("attack", attack=a.kind, target=target, outcome=outcome, code=code, expected=expected,
                      victim=a.victim, status=status, **extra)
        self.rec.bump("attacks_" + outcome)

    def _forgery(self, a: Attempt, cap) -> tuple[str, str, str, bytes]:
        token, path = cap[0], cap[1]
        body = cap[2] if len(cap) > 2 else b""
        if a.kind in ("replay", "other_service", "skip_hop"):
            return "POST", path, _bearer(token), body
        if a.kind == "other_resource":
            i = self.ids.index(a.victim) if a.victim in self.ids else 0
            other = self.ids[(i + 1) % len(self.ids)] if len(self.ids) > 1 else a.victim + "x"
            return "POST", f"/sensors/{other}/readings", _bearer(token), body
        if a.kind == "flip":
            b = bytearray(token)
            b[-10] ^= 0x01  # inside the authority block's signature
            return "POST", path, _bearer(bytes(b)), body
        if a.kind == "forge":
            return "POST", path, _bearer(self._forge(a.victim, path)), body
        if a.kind == "other_operation":
            valve = path.split("?", 1)[0].rsplit("/commands", 1)[0]
            return "POST", f"{valve}/open", _bearer(token), b""
        if a.kind == "command_replay":
            return "POST", path, _bearer(token), b""
        raise ValueError(f"unknown attack kind {a.kind}")

    def _forge(self, victim: str, path: str) -> bytes:
        from ... import SigningKey, mint

        if self._key is None:
            self._key = SigningKey.generate()
        resource = path.rsplit("/readings", 1)[0]
        return mint(self._key, sub=victim, scope=[(resource, "publish")], ttl=60)

    def _call(self, target: str, method: str, path: str, headers: dict[str, str],
              body: bytes) -> tuple[int, bytes | str]:
        """(status, body) of one HTTP exchange with a service of the stack; (0, why) when unreachable."""
        host, _, port = self.urls[target].split("://", 1)[-1].rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read()
        except OSError as e:
            return 0, f"unreachable: {e}"
        finally:
            conn.close()

    def _send(self, target: str, method: str, path: str, auth: str, body: bytes,
              proof: str | None = None) -> tuple[int, str]:
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        if proof is not None:  # a captured Crumb-PoP header goes along (PROTOCOL.md §12.1)
            headers["Crumb-PoP"] = proof
        status, data = self._call(target, method, path, headers, body)
        if isinstance(data, str):
            return status, data
        try:
            code = json.loads(data).get("code", "") if status >= 400 else ""
        except (ValueError, AttributeError):
            code = ""
        return status, code

    def _issuer(self, body: bytes) -> tuple[int, str]:
        status, data = self._call("issuer", "POST", "/token", {"Content-Type": protocol.CBOR_TYPES[0]}, body)
        if isinstance(data, str):
            return status, data
        try:
            return status, protocol.parse_response(data).code or ""
        except Exception:  # noqa: BLE001 - not a crumb answer
            return status, "garbage"

    def _mqtt_replay(self, topic: str, payload: bytes) -> tuple[int, str]:
        import hashlib

        import paho.mqtt.client as mqtt

        digest = hashlib.sha256(payload).hexdigest()[:16]
        t0 = self.rec.now()
        host, _, port = self.urls["broker"].rpartition(":")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crumb-sim-attacker", protocol=mqtt.MQTTv311)
        try:
            c.connect(host, int(port), 10)
            c.loop_start()
            c.publish(topic, payload, qos=1).wait_for_publish(5)
        except (OSError, RuntimeError, ValueError) as e:
            return 0, f"unreachable: {e}"
        finally:
            c.disconnect()
            c.loop_stop()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the consumer's verdict on this copy of the envelope
            for e in list(self.rec.of("mqtt")):
                if e.get("digest") == digest and e["t"] >= t0 - 0.05 and e.get("code") != "ok":
                    return 401, e["code"]
            seen = [e for e in self.rec.of("mqtt") if e.get("digest") == digest]
            if len(seen) >= 2 and all(e.get("code") == "ok" for e in seen):
                return 200, ""
            time.sleep(0.05)
        return 0, "no verdict"
