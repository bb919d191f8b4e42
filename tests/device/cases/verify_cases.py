# ucrumb.verify on the device, on CPython and in MicroPython: every shared
# token vector (shared/vectors/tokens.json) gets the verdict and the code the
# host verifier gives it (tests/host/test_vectors.py), then the device's own
# rules: the replay floor after a boot, an unsynced clock, the replay set.
# Tokens minted on the fly (eviction, the differential) are in
# tests/device/test_device_verify.py, which needs the host.
from binascii import unhexlify as u

from cases.vector_cases import _load
from ucrumb.verify import Refused, Verifier, noncanonical

_doc = {}


def _keys():
    if not _doc:
        import json

        for path in ("/vectors/tokens.json", __file__.rsplit("/", 4)[0] + "/shared/vectors/tokens.json"):
            try:
                with open(path) as f:
                    _doc.update(json.load(f))
                break
            except OSError:
                pass
    k = _doc["keys"]
    return u(k[_doc["issuer"]]["public"]), [u(k[n]["public"]) for n in _doc["node_keys"]]


def _vector(name):
    for v in _load():
        if v["name"] == name:
            return v
    raise KeyError(name)


def _verifier(v, fence=False, clock=None, **kw):
    issuer, nodes = _keys()
    cfg = v["verifier"]
    now = cfg["now"]
    return Verifier([issuer], cfg["audience"], clock or (lambda: now), node_keys=nodes, leeway=cfg["leeway"],
                    hop=cfg["hop"], fence=fence, **kw)


def _code(verifier, token, req):
    try:
        verifier.verify(token, req["resource"], req["operation"], req["facts"])
        return "ok"
    except Refused as e:
        return e.code


def test_every_shared_vector():
    wrong = []
    for v in _load():
        ver = _verifier(v)
        token = u(v["token"])
        got = None
        for _ in range(v["presentations"]):
            got = _code(ver, token, v["request"])
        if got != v["expect"]:
            wrong.append((v["name"], got, v["expect"]))
    assert not wrong, wrong
    assert len(_load()) >= 55


def test_the_vectors_reach_every_code_but_store_unavailable():
    codes = {v["expect"] for v in _load()} - {"ok", "revoked"}
    from ucrumb import verify

    mine = {getattr(verify, n) for n in dir(verify) if n.isupper() and isinstance(getattr(verify, n), str)}
    assert mine - codes == {"store_unavailable"}, mine - codes  # that one: below
    assert codes - mine == set(), codes - mine


def test_unsynced_clock_refuses_everything():
    v = _vector("plain single-use")
    ver = _verifier(v, clock=lambda: 0)
    assert _code(ver, u(v["token"]), v["request"]) == "store_unavailable"


def test_floor_after_boot_refuses_tokens_issued_before():
    # a fresh verifier (a reboot) refuses every token issued up to its first synced time + leeway
    v = _vector("plain single-use")
    now = [v["verifier"]["now"]]
    ver = _verifier(v, fence=True, clock=lambda: now[0])
    assert _code(ver, u(v["token"]), v["request"]) == "replayed"
    assert ver._floor == now[0] + v["verifier"]["leeway"]
    now[0] += 5  # the floor stays where the first synced time put it
    assert _code(ver, u(v["token"]), v["request"]) == "replayed"
    assert ver._floor == v["verifier"]["now"] + v["verifier"]["leeway"]


def test_multi_use_counts_down_then_refuses():
    v = _vector("multi-use")
    ver = _verifier(v)
    token = u(v["token"])
    got = [_code(ver, token, v["request"]) for _ in range(4)]
    assert got == ["ok", "ok", "ok", "replayed"], got


def test_refused_before_spending():
    # a refused request spends no use: the same token then passes
    v = _vector("plain single-use")
    ver = _verifier(v)
    token = u(v["token"])
    req = dict(v["request"])
    req["operation"] = "write"
    assert _code(ver, token, req) == "scope_denied"
    assert _code(ver, token, v["request"]) == "ok"
    assert _code(ver, token, v["request"]) == "replayed"


def test_token_text_is_refused():
    v = _vector("plain single-use")
    assert _code(_verifier(v), v["token"], v["request"]) == "malformed"


def test_noncanonical_resources_are_denied():
    v = _vector("prefix pattern")  # grants write on /sensors/*
    for res in ("/sensors/../valves/1", "/sensors/./x", "/sensors/..;x/y", "/sensors//x", "/sensors/x/",
                "/sensors/%2e%2e", "/sensors/a\\b", "/sensors/a\tb", "/sensors/\x7f"):
        req = dict(v["request"])
        req["resource"] = res
        assert noncanonical(res), res
        assert _code(_verifier(v), u(v["token"]), req) == "scope_denied", res
    for res in ("/", "/sensors/temp01", "a/b", "/sensors/.x", "/sensors/x..", "/sensors/x;y"):
        assert not noncanonical(res), res


def test_refusal_carries_code_and_message():
    v = _vector("expired")
    try:
        _verifier(v).verify(u(v["token"]), v["request"]["resource"], v["request"]["operation"])
    except Refused as e:
        assert e.code == "expired" and e.message and str(e).startswith("expired: ")
    else:
        raise AssertionError("not refused")
