# End to end: the device client gets tokens from the real issuer over HTTP
# and every call it makes is checked by a real verifier (crumb.Verifier in
# the service started by test_device_e2e.py). Runs on CPython and inside the
# MicroPython VM.
import json

from cases import raises

from ucrumb import client as C
from ucrumb.http import request

SERVICE = CRED = None


def setup(arg):
    # "SERVICE_URL|PATH|CREDENTIALS_JSON": the credential file `crumb device add`
    # wrote; where PATH cannot be read (inside the VM) it is written first.
    global SERVICE, CRED
    SERVICE, CRED, text = arg.split("|", 2)
    try:
        open(CRED).close()
    except OSError:
        with open(CRED, "w") as f:
            f.write(text)


def device(**kw):
    return C.from_file(CRED, **kw)


def test_authorized_calls_are_accepted():
    c = device()
    dev = c.device_id
    for i in range(6):
        status, _hdrs, body = c.request("POST", SERVICE + "/sensors/temp01", "/sensors/temp01", "publish",
                                       body=b"21.%d" % i, headers={"Content-Type": "text/plain"})
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert doc["sub"] == dev and doc["body"] == "21.%d" % i
    assert c.round_trips == 3  # boot resync, then two batches of 4 single-use tokens


def test_read_call():
    c = device()
    status, hdrs, body = c.request("GET", SERVICE + "/sensors/temp01", "/sensors/temp01", "read")
    assert status == 200 and hdrs["content-type"] == "application/json", (status, body)


def test_multi_use_tokens_until_used_up():
    c = device(batch=2)
    seen = []
    for _ in range(7):
        h = c.header("/config/net", "read")
        seen.append(h)
        status, _hdrs, body = request("GET", SERVICE + "/config/net", None, {"Authorization": h})
        assert status == 200, body
    assert seen[0] == seen[1] == seen[2] != seen[3]  # 3 uses each (the policy), then the next token
    assert seen[3] == seen[4] == seen[5] != seen[6]
    assert c.round_trips == 3  # resync, 2 tokens x 3 uses, then 2 more


def test_token_is_single_use_at_the_service():
    c = device()
    h = c.header("/sensors/temp01", "read")
    url = SERVICE + "/sensors/temp01"
    assert request("GET", url, None, {"Authorization": h})[0] == 200
    status, _hdrs, body = request("GET", url, None, {"Authorization": h})
    assert status == 401 and json.loads(body)["code"] == "replayed"


def test_scope_is_what_the_verifier_checks():
    c = device()
    h = c.header("/sensors/temp01", "read")
    status, _hdrs, body = request("POST", SERVICE + "/sensors/temp01", b"x", {"Authorization": h})
    assert status == 403 and json.loads(body)["code"] == "scope_denied"


def test_envelope_verifies():
    c = device()
    env = c.envelope("/sensors/temp01", "publish", "21.5")
    status, _hdrs, body = request("POST", SERVICE + "/envelope/sensors/temp01", env)
    assert status == 200, body
    assert json.loads(body)["body"] == "21.5"


def test_prefetch_several_scopes():
    c = device()
    c.prefetch([("/sensors/a", "read"), ("/sensors/b", "publish")], 2)
    assert c.round_trips == 2  # resync + one batch
    for res, op, method in (("/sensors/a", "read", "GET"), ("/sensors/b", "publish", "POST"),
                            ("/sensors/a", "read", "GET")):
        assert c.request(method, SERVICE + res, res, op, body=b"" if method == "POST" else None)[0] == 200
    assert c.round_trips == 2


def test_denied_scope():
    c = device()
    e = raises(C.Denied, c.token, "/valves/1", "open")
    assert e.code == "scope_denied"
    assert c.token("/sensors/temp01", "read")  # the client carries on


def test_wrong_key_is_bad_mac():
    c = device()
    c.key = bytes(32)
    e = raises(C.Denied, c.token, "/sensors/temp01", "read")
    assert e.code == "bad_mac"


def test_too_large_batch_lowers_itself():
    c = device(batch=32)  # the test policy allows 8
    assert c.token("/sensors/temp01", "read")
    assert c.batch == 8
