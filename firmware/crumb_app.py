# The crumb example application: read a sensor and send the reading with a
# token scoped to exactly that call (HTTP through the service chain, or an
# MQTT envelope), take commands for an actuator from the command service, and
# keep going through every failure: backoff (ucrumb's Backoff), reconnects,
# a watchdog fed between steps. docs/device.md, "The example application".
#
# The same file runs on a board (MicroPython), on a Linux single-board
# computer (CPython + Adafruit Blinka) and, unmodified, in `crumb sim`:
# hardware goes through hal.py.
#
# Files on the board (next to this one):
#   crumb.json   the device credentials: `crumb device add ID --out crumb.json`
#   config.json  the settings (config.example.json; docs/device.md lists them)
import json
import time

import hal
from ucrumb import http
from ucrumb.client import Backoff, ClockUnsynced, Denied, IssuerUnavailable, from_file
from ucrumb.http import HTTPError, ticks_add, ticks_diff, ticks_ms

try:
    from time import sleep_ms
except ImportError:  # CPython

    def sleep_ms(ms):
        time.sleep(ms / 1000)


try:
    import network
except ImportError:  # CPython on a single-board computer: the OS keeps the link up
    network = None

OPS = ("open", "close")  # what the actuator does


def _print(event, *args):
    print(event, *args)


def _code(body):
    # The stable code of a service's refusal (an RFC 9457 problem body), or "".
    try:
        return json.loads(body).get("code") or ""
    except (ValueError, AttributeError, TypeError):
        return ""


class App:
    """One device: its settings, its crumb client, its hardware, its state.

    ``log(event, *fields)`` reports what happens (default: print). ``what``
    is ``telemetry`` or ``poll``; ``trips`` the issuer round trips the call
    needed (0: its token came from the cache). The events:

    ``boot unique_id``, ``wifi up``,
    ``sent what status code ms trips`` (an HTTP call answered; code: the
    service's refusal code, "" when accepted), ``published what ms trips``,
    ``no_token what code retry_ms``, ``denied what code``,
    ``unreachable what target message``, ``command seq op verdict``.
    """

    def __init__(self, cfg, credentials="crumb.json", log=None):
        self.cfg = cfg
        self.log = log or _print
        hw = cfg.get("hal") or {}
        self.sensor = hal.Sensor(hw.get("sensor"))
        self.contact = hal.Contact(hw.get("contact"))
        self.actuator = hal.Actuator(hw.get("actuator"))
        # The slowest step between two feeds is one ucrumb call: at most two
        # exchanges (the boot resync retries once), each bounded by timeout.
        self.timeout = cfg.get("timeout", 3)
        wdt = cfg.get("watchdog_ms", 8000)
        self.dog = hal.Watchdog(wdt)
        self.feed_ms = wdt // 2 if wdt else 1000  # the longest sleep: half the watchdog's timeout
        kw = {"timeout": self.timeout, "batch": cfg.get("batch", 4)}
        if "cadata" in cfg:  # else crumb.json's "ca" (`crumb device add --ca`), if any
            kw["cadata"] = cfg["cadata"]
        self.crumb = from_file(credentials, **kw)
        me = self.crumb.device_id
        self.resource = cfg.get("resource") or "/sensors/" + me
        self.operation = cfg.get("operation", "publish")
        service = cfg.get("service")
        self.url = cfg.get("url") or (service + self.resource + "/readings" if service else None)
        self.every = int(cfg.get("every", 30) * 1000)
        self.mqtt_cfg = cfg.get("mqtt") if cfg.get("transport") == "mqtt" else None
        self.mqtt = None
        self.commands = cfg.get("commands")
        self.valve = cfg.get("actuator_resource") or "/valves/" + me
        self.poll_every = int(cfg.get("poll_every", 10) * 1000)
        self.max_age = cfg.get("command_max_age", 60)
        self.last_seq = 0  # the newest command applied: none is applied twice
        # On-device verification (issue 18; PROTOCOL.md §7.1): with command_keys (the issuer's
        # public keys, hex) every command must carry the sender's token for (this valve, its
        # operation) with this device as audience, and it is verified here, offline, before
        # the actuator moves. ucrumb.verify is imported only then (the "verify" board feature).
        keys = cfg.get("command_keys")
        self.verifier = None
        if keys:
            from binascii import unhexlify

            from ucrumb.verify import Verifier

            self.verifier = Verifier([unhexlify(k) for k in keys], me, lambda: self.crumb.now(),
                                     max_entries=cfg.get("command_replay_entries", 32))
        self.backoff = Backoff(1000, cfg.get("max_backoff", 60) * 1000)  # the service, the broker
        self.wifi_backoff = Backoff(2000, 60000)
        self.wlan = network.WLAN(network.STA_IF) if network is not None else None
        self.log("boot", hal.unique_id())

    # -- the link ---------------------------------------------------------
    def online(self):
        """True when the Wi-Fi is up; otherwise asks it to reconnect, with backoff."""
        if self.wlan is None or self.wlan.isconnected():
            if self.wifi_backoff.step:
                self.wifi_backoff.ok()
                self.log("wifi", True)
            return True
        if not self.wifi_backoff.left():
            self.wifi_backoff.failed()
            wifi = self.cfg.get("wifi") or {}
            try:
                self.wlan.active(True)
                self.wlan.connect(wifi.get("ssid"), wifi.get("password"))
            except OSError as e:
                self.log("unreachable", "link", "wifi", e)
        return False

    # -- telemetry --------------------------------------------------------
    def reading(self):
        doc = {"value": self.sensor.read()}
        contact = self.contact.read()
        if contact is not None:
            doc["contact"] = contact
        if doc["value"] is None:
            doc["value"] = 0.0  # no sensor on this port: send a constant
        return json.dumps(doc)

    def telemetry(self):
        if self.backoff.left():  # the service or broker failed a moment ago
            return
        body = self.reading()
        trips = self.crumb.round_trips
        t0 = ticks_ms()
        try:
            if self.mqtt_cfg is not None:
                self.publish(body)
                self.log("published", "telemetry", ticks_diff(ticks_ms(), t0), self.crumb.round_trips - trips)
                return
            hdrs = self.crumb.auth_headers("POST", self.url, self.resource, self.operation, body)
        except IssuerUnavailable as e:  # no token now; cached ones are used while they last
            self.log("no_token", "telemetry", e.code, self.crumb.retry_in())
            return
        except Denied as e:  # the policy says no: retrying will not help
            self.log("denied", "telemetry", e.code)
            return
        except ClockUnsynced as e:
            self.log("no_token", "telemetry", e.code, 0)
            return
        except OSError as e:  # the broker
            self.mqtt_failed(e)
            return
        self.dog.feed()
        try:
            hdrs["Content-Type"] = "application/json"
            status, headers, data = http.request("POST", self.url, body, hdrs, self.timeout)
        except HTTPError as e:  # the service could not be reached
            self.backoff.failed()
            self.log("unreachable", "telemetry", "service", e)
            return
        code = "" if status < 400 else _code(data)
        if status >= 500:  # store_unavailable, upstream_unavailable: passes by itself
            ra = headers.get("retry-after", "")
            self.backoff.failed(int(ra) * 1000 if ra.isdigit() else None)
        else:
            self.backoff.ok()  # a refusal is an answer, not a failure
        self.log("sent", "telemetry", status, code, ticks_diff(ticks_ms(), t0), self.crumb.round_trips - trips)

    def publish(self, body):
        if self.mqtt is None:
            m = self.mqtt_cfg
            self.mqtt = mqtt_client(self.crumb.device_id, m["host"], m.get("port", 1883))
        topic = self.mqtt_cfg.get("topic") or "telemetry/" + self.crumb.device_id
        self.crumb.publish(self.mqtt, topic, body, resource="/" + topic)
        self.backoff.ok()

    def mqtt_failed(self, e):
        self.backoff.failed()
        self.log("unreachable", "telemetry", "broker", e)
        if self.mqtt is not None:
            try:
                self.mqtt.disconnect()
            except Exception:
                pass
            self.mqtt = None  # reconnect on the next reading

    # -- commands ---------------------------------------------------------
    # A command is taken only from the command service, as the answer to this
    # device's own poll, which carries its token for (its valve, "read"): the
    # service verified the sender's token for (this valve, the operation)
    # before it queued the command. Each command is then checked here: it is
    # for this device's valve, its operation is one the actuator has, it is
    # newer than the last one applied (never applied twice), and not older
    # than command_max_age by the issuer's clock. With command_keys set, the
    # sender's own token travels with the command and the device verifies it
    # too (verify() below): then a forged, altered or replayed command is
    # refused here even if the command service or the way to it is not to be
    # trusted. Without, use https (cadata) so the answer cannot be forged.
    def poll(self):
        if self.backoff.left():
            return
        trips = self.crumb.round_trips
        t0 = ticks_ms()
        try:
            auth = self.crumb.header(self.valve, "read")
        except (IssuerUnavailable, ClockUnsynced) as e:
            self.log("no_token", "poll", e.code, self.crumb.retry_in())
            return
        except Denied as e:
            self.log("denied", "poll", e.code)
            return
        self.dog.feed()
        url = "%s%s/commands?after=%d" % (self.commands, self.valve, self.last_seq)
        try:
            status, _headers, data = http.request("GET", url, None, {"Authorization": auth}, self.timeout)
        except HTTPError as e:
            self.backoff.failed()
            self.log("unreachable", "poll", "commands", e)
            return
        ms = ticks_diff(ticks_ms(), t0)
        trips = self.crumb.round_trips - trips
        if status != 200:
            if status >= 500:
                self.backoff.failed()
            self.log("sent", "poll", status, _code(data), ms, trips)
            return
        self.backoff.ok()
        try:
            items = json.loads(data)["commands"]
        except (ValueError, KeyError, TypeError):
            self.log("sent", "poll", status, "garbage", ms, trips)
            return
        self.log("sent", "poll", status, "", ms, trips)
        for c in items:
            self.command(c)

    def check(self, c):
        # "" when the command may be applied, else why not.
        if type(c) is not dict:
            return "malformed"
        seq = c.get("seq")
        if type(seq) is not int or seq <= self.last_seq:
            return "old"
        if c.get("resource") != self.valve:
            return "not_mine"
        if c.get("op") not in OPS:
            return "unknown_op"
        at = c.get("at")
        now = self.crumb.now()
        if type(at) is not int or (now and not -self.max_age <= now - at <= self.max_age):
            return "stale"
        if self.verifier is not None:
            return self.verify(c)
        return ""

    def verify(self, c):
        # The sender's token, checked on the device: "" or the stable code of the refusal.
        from binascii import unhexlify

        from ucrumb.verify import Refused

        try:
            token = unhexlify(c.get("token") or "")
        except (ValueError, TypeError):
            return "malformed"
        try:
            self.verifier.verify(token, self.valve, c["op"])
        except Refused as e:
            return e.code
        return ""

    def command(self, c):
        why = self.check(c)
        if why != "old" and type(c) is dict:  # then check() found seq an int above last_seq
            # judged once: applied, or refused for good (a refused token stays refused), so
            # the next poll (after=last_seq) does not bring it back
            self.last_seq = c["seq"]
        if why == "":
            self.actuator.set(c["op"] == "open")
            why = "applied"
        self.log("command", c.get("seq") if type(c) is dict else None, c.get("op") if type(c) is dict else None, why)

    # -- the loop ---------------------------------------------------------
    def loop(self, rounds=None):
        """Read and send every ``every`` s and poll for commands every
        ``poll_every`` s, forever or for ``rounds`` readings."""
        n = 0
        now = ticks_ms()
        next_read = now
        next_poll = ticks_add(now, self.poll_every // 2)
        while rounds is None or n < rounds:
            self.dog.feed()
            now = ticks_ms()
            if ticks_diff(next_read, now) <= 0:
                n += 1
                next_read = ticks_add(next_read, self.every)
                if ticks_diff(next_read, now) < 0:  # late (a long outage): no catch-up burst
                    next_read = ticks_add(now, self.every)
                if self.online():
                    self.telemetry()
            now = ticks_ms()
            if self.commands and ticks_diff(next_poll, now) <= 0:
                next_poll = ticks_add(now, self.poll_every)
                if self.online():
                    self.poll()
            if rounds is not None and n >= rounds:
                break
            now = ticks_ms()
            wait = ticks_diff(next_read, now)
            if self.commands:
                wait = min(wait, ticks_diff(next_poll, now))
            sleep_ms(max(0, min(wait, self.feed_ms)))  # wake in time to feed the watchdog

    def close(self):
        if self.mqtt is not None:
            try:
                self.mqtt.disconnect()
            except Exception:
                pass
            self.mqtt = None


def mqtt_client(client_id, host, port):
    """A connected MQTT client with publish(topic, msg, retain=, qos=): umqtt.simple on
    MicroPython, paho-mqtt on CPython. Raises OSError when the broker cannot be reached."""
    try:
        # micropython-lib: mpremote mip install umqtt.simple
        from umqtt.simple import MQTTClient
    except ImportError:
        return _Paho(client_id, host, port)
    c = MQTTClient(client_id, host, port)
    c.connect()
    return c


class _Paho:
    # paho-mqtt behind umqtt.simple's shape: publish raises OSError when the
    # message cannot be sent, as umqtt.simple does on a broken socket.
    def __init__(self, client_id, host, port):
        import paho.mqtt.client as mqtt

        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.c.connect(host, port, 30)
        self.c.loop_start()

    def publish(self, topic, msg, retain=False, qos=0):
        info = self.c.publish(topic, msg, qos=qos, retain=retain)
        if info.rc != 0:
            raise OSError("MQTT publish failed: rc %d" % info.rc)

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()


def run(rounds=None, config="config.json", credentials="crumb.json", log=None):
    """Start the application with the files on the board."""
    with open(config) as f:
        cfg = json.load(f)
    app = App(cfg, credentials, log)
    try:
        app.loop(rounds)
    finally:
        app.close()
