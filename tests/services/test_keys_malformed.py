"""Malformed key material (issue 16): every key parser is total, and a bad key set never costs a request.

Any input to a key parser gives keys or a CrumbError with code ``invalid_key``; a GET /keys
document that is not a usable key set leaves the last good set in force, so the middleware
still answers with a verdict (never a 500) and the MQTT consumer keeps consuming.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crumb import SigningKey, Verifier, mint, to_text
from crumb.errors import BY_CODE, CrumbError, InvalidKey, KeysUnavailable
from crumb.keys import KeyFileError, load_public_key, load_signing_key, read_json, unb64u
from crumb.replay import MemoryReplayStore
from crumb.services.envelope import pack
from crumb.services.keyfetch import FetchedKeys, KeyFetchError
from crumb.services.keyset import KeySetError, load_file, parse_document, parse_json, pinned
from crumb.services.mqtt import MqttConsumer
from crumb.tooling.localservices import AppServer

from . import apps
from .keyserver import KeyServer, document

RES, URL, TOPIC = "/sensors/temp01", "/sensors/temp01/readings", "sensors/temp01/readings"

# The examples, as GET /keys bodies: a JWK whose "x" is a number (AttributeError in the
# base64 decoder), nesting deeper than the parser's recursion limit (RecursionError), and more.
DEEP = b"[" * 30_000 + b"]" * 30_000
NAMED_BAD_BODIES = {
    "x is a number": json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": 123}]}).encode(),
    "x is a list": json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ["AA"]}]}).encode(),
    "x is null": json.dumps({"nodes": [{"kty": "OKP", "crv": "Ed25519", "x": None}], "keys": []}).encode(),
    "deeply nested": DEEP,
    "deeply nested keys": b'{"keys": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "not UTF-8": b'{"keys": [], "issuer": "\xff\xfe"}',
    "keys is an object": json.dumps({"keys": {"kty": "OKP", "crv": "Ed25519", "x": 123}}).encode(),
    "status is a number": json.dumps({"keys": [{**SigningKey(bytes(32)).public.to_jwk(), "status": 1}]}).encode(),
    # A well-formed set, padded to 1 MiB: read no further than 64 KiB, whatever it holds.
    "huge": json.dumps({"keys": [SigningKey(bytes(32)).public.to_jwk()], "pad": "A" * (1 << 20)}).encode(),
}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def only_invalid_key(fn, *args):
    """fn(*args), or the CrumbError it raised; anything else fails the test."""
    try:
        return fn(*args)
    except CrumbError as e:
        assert e.code == "invalid_key" and e.message, e
        return e


# -- the codes

def test_key_codes_have_their_classes():
    assert BY_CODE["invalid_key"] is InvalidKey and BY_CODE["keys_unavailable"] is KeysUnavailable
    for cls in (KeyFileError, KeySetError):
        assert issubclass(cls, InvalidKey) and issubclass(cls, ValueError) and cls.code == "invalid_key"
    assert issubclass(KeyFetchError, KeysUnavailable) and KeyFetchError.code == "keys_unavailable"
    assert str(KeySetError("x")) == "invalid_key: x"


# -- totality, property-tested

NAMES = st.sampled_from(["keys", "nodes", "kty", "crv", "x", "d", "kid", "status", "name", "OKP", "Ed25519"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=50) | NAMES | st.just("AAAA") | st.just(SigningKey.generate().public.to_jwk()["x"]))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(NAMES | st.text(max_size=5), inner, max_size=5), max_leaves=30)


@st.composite
def documents(draw):
    """Arbitrary JSON values, and valid key sets and JWKs with one member replaced by an arbitrary value."""
    kind = draw(st.sampled_from(["any", "set", "jwk"]))
    if kind == "any":
        return draw(JSONISH)
    key = SigningKey.generate()
    doc = document(key.public, nodes={"gw": SigningKey.generate().public}) if kind == "set" else key.to_jwk()
    target = doc if kind == "jwk" else draw(st.sampled_from([doc, doc["keys"][0], doc["nodes"][0]]))
    target[draw(NAMES)] = draw(JSONISH)
    return doc


@given(documents())
def test_key_set_documents_parse_to_keys_or_invalid_key(doc):
    only_invalid_key(parse_document, doc)
    only_invalid_key(parse_json, json.dumps(doc))


@given(documents())
def test_key_files_load_to_keys_or_invalid_key(doc):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "key.json"
        path.write_text(json.dumps(doc))
        for fn in (read_json, load_file, load_public_key, load_signing_key):
            only_invalid_key(fn, path)
        only_invalid_key(pinned, [path], [path])


JSON_BYTES = st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b"1", b"x", b"null",
                                       b'"keys"', b'"x"', b"\xff", b" "]), max_size=200).map(b"".join)


@given(st.binary(max_size=300) | JSON_BYTES | st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n))
def test_key_set_bodies_parse_to_keys_or_invalid_key(body):
    only_invalid_key(parse_json, body)


@given(SCALARS | st.lists(SCALARS, max_size=2))
def test_base64url_decoding_is_total(value):
    try:
        unb64u(value)
    except (TypeError, ValueError):  # TypeError: not text; ValueError: not canonical base64url
        pass


def test_fetched_documents_never_raise_anything_untyped():
    """Every body the issuer could answer with: fetch() installs it or raises a typed error."""
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url)
        keys.fetch()

        @settings(max_examples=60)
        @given(documents() | st.binary(max_size=200) | st.sampled_from(list(NAMED_BAD_BODIES.values())))
        def check(doc):
            srv.serve(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
            before = keys.keys
            try:
                assert keys.fetch() is keys.keys
            except CrumbError as e:
                assert e.code == "invalid_key" and srv.url in e.message
                assert keys.keys is before  # a refused document displaces nothing

        check()
    keys.close()


# -- the examples, end to end

@pytest.mark.parametrize("name", NAMED_BAD_BODIES)
def test_named_bad_bodies_are_invalid_key(name):
    with pytest.raises(KeySetError) as e:
        parse_json(NAMED_BAD_BODIES[name])
    assert e.value.code == "invalid_key"


@pytest.mark.parametrize("name", NAMED_BAD_BODIES)
def test_a_bad_fetched_set_keeps_the_last_good_one(name):
    clock = Clock()
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=1, max_age=5, clock=clock)
        v = Verifier([], resolver=keys, replay=MemoryReplayStore(fence=False))
        v.verify(mint(issuer, scope=[(RES, "read")]), RES, "read")
        srv.serve(NAMED_BAD_BODIES[name])
        clock.t += 10  # the set is stale: the next lookup refetches, and gets the bad body
        v.verify(mint(issuer, scope=[(RES, "read")]), RES, "read")
        assert srv.requests == 2 and keys.failures == 1 and keys.fetches == 1
        assert keys.last_error.startswith("invalid_key: GET ")
        with pytest.raises(KeySetError):
            keys.fetch()


def test_failed_refreshes_back_off_up_to_max_age():
    clock = Clock()
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=10, max_age=60, clock=clock)
        v = Verifier([], resolver=keys, replay=MemoryReplayStore(fence=False))
        v.verify(mint(issuer, scope=[(RES, "read")]), RES, "read")
        srv.serve(NAMED_BAD_BODIES["x is a number"])
        attempts = []
        for _ in range(400):  # a stale set looked up every second for 400 s
            clock.t += 1
            before = srv.requests
            v.verify(mint(issuer, scope=[(RES, "read")]), RES, "read")
            if srv.requests != before:
                attempts.append(clock.t)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[:4] == [20, 40, 60, 60]  # min_interval doubled per failure, never beyond max_age
        assert set(gaps[4:]) == {60}
        srv.serve(document(issuer.public))
        clock.t += 60
        v.verify(mint(issuer, scope=[(RES, "read")]), RES, "read")
        assert keys.failures_in_row == 0 and keys.retry_interval() == 10


def test_the_middleware_answers_with_a_verdict_not_a_500():
    clock = Clock()
    issuer = SigningKey.generate()
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=1, max_age=5, clock=clock)
        verifier = Verifier([], resolver=keys, replay=MemoryReplayStore(fence=False))
        with AppServer(apps.asgi_app(verifier, apps.Calls())) as app, \
                httpx.Client(base_url=app.url, timeout=30) as client:
            def post(key: SigningKey) -> httpx.Response:
                token = mint(key, sub="dev-0001", scope=[(RES, "publish")])
                return client.post(URL, headers={"authorization": f"Bearer {to_text(token)}"})

            assert post(issuer).status_code == 201
            for name, body in NAMED_BAD_BODIES.items():
                srv.serve(body)
                clock.t += 1000  # stale, and past any backoff
                r = post(issuer)
                assert r.status_code == 201, (name, r.text)  # the last good set is in force
                r = post(SigningKey.generate())
                assert r.status_code == 401 and r.json()["code"] == "unknown_key", (name, r.text)
        # One failed refresh per bad body: the unknown kid right after it is within the retry interval.
        assert keys.failures == len(NAMED_BAD_BODIES)


def test_the_mqtt_consumer_keeps_consuming(mosquitto):
    clock = Clock()
    issuer = SigningKey.generate()
    got = []
    publisher = _publisher(mosquitto)
    with KeyServer(document(issuer.public)) as srv:
        keys = FetchedKeys(srv.url, min_interval=1, max_age=5, clock=clock)
        verifier = Verifier([], resolver=keys, replay=MemoryReplayStore(fence=False))
        with MqttConsumer(verifier, lambda topic, payload, grant: got.append(payload), "sensors/+/readings",
                          host=mosquitto.host, port=mosquitto.port) as c:
            n = 0
            for body in (None, *NAMED_BAD_BODIES.values()):
                if body is not None:
                    srv.serve(body)
                    clock.t += 1000
                for key in (issuer, SigningKey.generate()):
                    token = mint(key, sub="dev-0001", scope=[(TOPIC, "publish")])
                    publisher.publish(TOPIC, pack(token, b"%d" % n), qos=1).wait_for_publish(60)
                    n += 1
                assert c.wait_processed(n, 60), c.stats()  # a dead network thread would process nothing more
    publisher.loop_stop()
    publisher.disconnect()
    assert got == [b"%d" % i for i in range(0, n, 2)]
    assert c.rejected == {"unknown_key": n // 2}


def test_an_exception_while_checking_a_message_is_a_rejection(mosquitto):
    """An application callable that raises (here ``facts``) must not reach paho's network thread."""
    issuer = SigningKey.generate()
    got = []
    publisher = _publisher(mosquitto)

    def facts(topic: str, payload: bytes) -> dict:
        if payload == b"boom":
            raise RuntimeError("the application's facts failed")
        return {}

    verifier = Verifier([issuer.public], replay=MemoryReplayStore(fence=False))
    with MqttConsumer(verifier, lambda topic, payload, grant: got.append(payload), "sensors/+/readings",
                      host=mosquitto.host, port=mosquitto.port, facts=facts) as c:
        for payload in (b"boom", b"fine"):
            token = mint(issuer, sub="dev-0001", scope=[(TOPIC, "publish")])
            publisher.publish(TOPIC, pack(token, payload), qos=1).wait_for_publish(60)
        assert c.wait_processed(2, 60), c.stats()
    publisher.loop_stop()
    publisher.disconnect()
    assert got == [b"fine"] and c.rejected == {"internal_error": 1}


def _publisher(mosquitto):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    return client


# -- the command line

def crumb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crumb.cli", *args], capture_output=True, text=True,
                          check=False, timeout=300)


BAD_KEY_FILES = {
    "x is a number": json.dumps({"kty": "OKP", "crv": "Ed25519", "x": 123}),
    "d is a list": json.dumps({"kty": "OKP", "crv": "Ed25519", "d": [1]}),
    "deeply nested": DEEP.decode(),
}


@pytest.mark.parametrize("name", BAD_KEY_FILES)
def test_policy_check_names_a_bad_node_key_file_in_one_line(tmp_path, name):
    (tmp_path / "gw.pub").write_text(BAD_KEY_FILES[name])
    (tmp_path / "p.toml").write_text('[nodes]\ngw = { key_file = "gw.pub" }\n')
    r = crumb("policy", "check", str(tmp_path / "p.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stdout == ""
    problem, summary = r.stderr.splitlines()
    assert "nodes.gw.key_file" in problem and "invalid_key" in problem and "gw.pub" in problem
    assert summary.endswith(": 1 problem")


@pytest.mark.parametrize("name", BAD_KEY_FILES)
def test_verify_names_a_bad_key_file(tmp_path, name):
    (tmp_path / "issuer.pub").write_text(BAD_KEY_FILES[name])
    r = crumb("verify", "--pub", str(tmp_path / "issuer.pub"), "--res", RES, "--op", "read", "AAAA")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid_key" in r.stderr and "issuer.pub" in r.stderr
