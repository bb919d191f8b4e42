# The shared token vectors (shared/vectors/tokens.json) through the device's
# CBOR decoder: host and device agree on which tokens are well-formed,
# deterministic CBOR at every level (token, protected headers, payloads).
# And the fixed CBOR corpus (shared/vectors/cbor.json), which the host's
# decoder follows too (tests/device/test_device_cbor_differential.py).
import json

from ucrumb import cbor

_vectors = {}


def _load(name="tokens.json"):
    if name not in _vectors:
        for path in ("/vectors/" + name,  # mounted there in the VM
                     __file__.rsplit("/", 4)[0] + "/shared/vectors/" + name):
            try:
                with open(path) as f:
                    _vectors[name] = json.load(f)["vectors"]
                break
            except OSError:
                pass
        else:
            raise OSError("shared/vectors/%s not found" % name)
    return _vectors[name]


def _well_formed(token):
    try:
        items = cbor.loads(token)
        for block in items[1:] if isinstance(items, list) else ():
            if isinstance(block, list) and len(block) == 4:
                cbor.loads(block[0])
                cbor.loads(block[2])
    except cbor.CBORError:
        return False
    return True


def test_vectors_present():
    assert len(_load()) >= 40


def test_device_decoder_agrees_with_host_on_vectors():
    for v in _load():
        got = _well_formed(bytes.fromhex(v["token"]))
        assert got == v["cbor_ok"], v["name"]


def test_valid_tokens_have_the_documented_shape():
    # [1, [protected, {}, payload, signature(64)], ...] for every token the host accepts.
    for v in _load():
        if v["expect"] != "ok":
            continue
        items = cbor.loads(bytes.fromhex(v["token"]))
        assert items[0] == 2, v["name"]  # format version 2 (wire.json FORMAT_VERSION)
        for block in items[1:]:
            if isinstance(block, bytes):
                assert len(block) in (32, 64), v["name"]  # the proof of an open token
                continue
            assert len(block) == 4 and block[1] == {} and len(block[3]) == 64, v["name"]


def test_device_decoder_follows_the_cbor_corpus():
    vectors = _load("cbor.json")
    assert len(vectors) >= 50
    for v in vectors:
        data = bytes.fromhex(v["cbor"])
        lim = v["limits"] or {"max_depth": 16, "max_string": 4096}
        try:
            value = cbor.loads(data, lim["max_depth"], 512, lim["max_string"])
        except cbor.CBORError:
            assert not v["ok"], v["name"]
            continue
        assert v["ok"], v["name"]
        assert cbor.dumps(value) == data, v["name"]  # the one encoding: it writes back the same bytes
