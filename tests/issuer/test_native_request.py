"""crumb._request beyond the parser: the MAC (MacKey) and the lanes' bytes (Lane), each held to the
Python code it replaces, byte for byte, and the issuer's answers the same with and without them."""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import pytest

from crumb import SigningKey, cbor
from crumb.issuer import protocol
from crumb.issuer.audit import IssuedRecord, _q
from crumb.issuer.minting import Minter, finish
from crumb.issuer.protocol import DeviceMacs, Issued, derive_device_key, token_response_cbor

_request = pytest.importorskip("crumb._request") if os.environ.get("CRUMB_NATIVE_REQUEST") == "0" else None
from crumb import _request  # noqa: E402  (test_the_native_common_request_parser_is_built fails if absent)

MASTER = bytes(range(32))


def test_mac_key_is_hmac_sha256_at_every_block_boundary():
    rng = random.Random(7)
    for key_len in (0, 1, 31, 32, 63, 64, 65, 100, 200):
        key = rng.randbytes(key_len)
        mk = _request.MacKey(key)
        for n in list(range(0, 200)) + [447, 448, 449, 1000, 4096]:
            msg = rng.randbytes(n)
            expected = hmac.digest(key, msg, "sha256")
            assert mk.digest(msg) == expected, (key_len, n)
            assert mk.verify(msg, expected[:16])
    # RFC 4231 test case 2, independent of hashlib
    assert _request.MacKey(b"Jefe").digest(b"what do ya want for nothing?").hex() == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_mac_key_verify_refuses_every_wrong_mac():
    key = derive_device_key(MASTER, "dev-1")
    mk = _request.MacKey(key)
    msg = b"\xa4" + os.urandom(90)
    good = hmac.digest(key, msg, "sha256")[:16]
    assert mk.verify(msg, good)
    for i in range(16):  # every byte position, every bit
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            assert not mk.verify(msg, bytes(bad))
    assert not mk.verify(msg, good[:15]) and not mk.verify(msg, good + b"\0") and not mk.verify(msg, b"")
    assert not mk.verify(msg, hmac.digest(key, msg, "sha256"))  # the untruncated MAC is not the wire MAC
    assert not mk.verify(msg + b"\0", good) and not mk.verify(msg[:-1], good)
    assert not _request.MacKey(derive_device_key(MASTER, "dev-2")).verify(msg, good)
    with pytest.raises(TypeError):
        mk.verify(bytearray(msg), good)


def test_device_macs_agree_with_and_without_the_native_mac():
    native, python = DeviceMacs(MASTER), DeviceMacs(MASTER, native=False)
    assert native._native is not None and python._native is None
    for i in range(50):
        device, msg = f"dev-{i % 7}", os.urandom(40 + i)
        mac = protocol.mac_of(derive_device_key(MASTER, device), msg)
        assert native.mac(device, msg) == python.mac(device, msg) == mac
        assert native.verify(device, msg, mac) and python.verify(device, msg, mac)
        assert not native.verify(device, msg, bytes(16)) and not python.verify(device, msg, bytes(16))
        assert not native.verify(f"x{device}", msg, mac) and not python.verify(f"x{device}", msg, mac)
    small = DeviceMacs(MASTER, max_entries=3)  # the cache is bounded
    for i in range(10):
        assert small.verify(f"d{i}", b"m", protocol.mac_of(derive_device_key(MASTER, f"d{i}"), b"m"))
    assert len(small._states) <= 3


SHAPES = [
    dict(resource="/sensors/temp01", permission="read", sub="dev-0001", ttl=60, uses=1),
    dict(resource="/s/dé/*", permission=["a", "b"], sub="d", ttl=120, uses=3, iss="me", aud="ingest"),
    dict(resource="/x", permission=5, sub="d@x", ttl=86_400, uses=2),
    dict(resource="/y", permission="write", sub="d", ttl=0, uses=2**32 - 1),
    dict(resource="/z", permission="read", sub="d", ttl=2**32 - 1, uses=24),
]
PEERS = ["127.0.0.1", None, "::1", 'we"ird\\peer\n', "pér"]


def _native_lane(minter: Minter, key: SigningKey, shape: dict, record: IssuedRecord):
    mint = minter.lane(key, **shape)
    return mint, _request.Lane(mint.template.prefix, mint.template.suffix, mint.head, mint.to_sign,
                               record.head.encode(), record.mid.encode(), record.tail.encode(), shape["ttl"],
                               shape["uses"])


@pytest.mark.parametrize("shape", SHAPES)
def test_lane_writes_the_bytes_python_writes(shape):
    key = SigningKey.generate()
    minter = Minter()
    record = IssuedRecord(device=shape["sub"], scope=[(shape["resource"], shape["permission"])], count=1,
                          kid=key.kid.hex(), rules=["groups.g.allow[0]"])
    mint, lane = _native_lane(minter, key, shape, record)
    rng = random.Random(3)
    for now in (65_536, 1_700_000_000, 1_800_000_000, 2**32 - 1 - shape["ttl"], 4_000_000_000):
        if not (65_536 <= now and now + shape["ttl"] < 2**32):  # Python's other encoding: C steps aside
            assert lane.prepare(now, float(now), b"null") is None
            continue
        for now_f in (float(now), now + 0.9999999, now + 0.5, now + rng.random()):
            for peer in PEERS:
                cti = rng.randbytes(8)
                unsigned, to_sign, body = lane.prepare(now, now_f, _q(peer).encode(), cti)
                assert (unsigned, to_sign, cti) == mint.prepare(now, cti)
                assert body == record.body_one(int(now_f * 1000), now + shape["ttl"], peer, cti.hex())
        signature = key.sign(to_sign)
        issued = [Issued(finish(unsigned, signature), shape["ttl"], shape["uses"], cti, (shape["resource"], "x"))]
        for at in (now, 0, 23, 24, 255, 65_536, 2**40):
            assert lane.answer(unsigned, signature, at) == token_response_cbor(issued, at, False)
        assert cbor.loads(lane.answer(unsigned, signature, now))[1] == issued[0].token


def test_lane_steps_aside_outside_the_four_byte_times():
    key = SigningKey.generate()
    shape = dict(resource="/a", permission="read", sub="d", ttl=60, uses=1)
    record = IssuedRecord(device="d", scope=[("/a", "read")], count=1, kid="00", rules=["r"])
    _, lane = _native_lane(Minter(), key, shape, record)
    for now in (0, 65_535, 2**32 - 60, 2**32, 2**64, 2**70):
        assert lane.prepare(now, float(now), b"null") is None
    assert lane.prepare(65_536, 65_536.0, b"null") is not None
    assert lane.prepare(2**32 - 61, 2.0**32, b"null") is not None
    assert lane.prepare(1_800_000_000, float("nan"), b"null") is None
    with pytest.raises(TypeError):
        lane.prepare(1_800_000_000, 1_800_000_000, b"null")  # now_f must be a float
    with pytest.raises(ValueError):
        lane.prepare(1_800_000_000, 1.8e9, b"null", b"short")
    with pytest.raises(ValueError):
        lane.answer(b"x", bytes(63), 1)


def test_lane_token_ids_are_fresh_and_not_shared_with_a_forked_child():
    key = SigningKey.generate()
    shape = dict(resource="/a", permission="read", sub="d", ttl=60, uses=1)
    record = IssuedRecord(device="d", scope=[("/a", "read")], count=1, kid="00", rules=["r"])
    _, lane = _native_lane(Minter(), key, shape, record)

    def cti() -> bytes:
        body = lane.prepare(1_800_000_000, 1.8e9, b"null")[2]
        return bytes.fromhex(body.rsplit(b'"tokens":["', 1)[1][:16].decode())

    ids = [cti() for _ in range(3000)]  # across several refills of the pool
    assert len(set(ids)) == len(ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to compare with the parent's next
        os.write(write, cti())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0 and len(child) == 8
    assert child != cti() and child not in ids


def test_lane_answer_is_the_response_encoder_for_every_uses_and_ttl():
    unsigned, signature = os.urandom(150), os.urandom(64)
    for ttl in (0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1):
        for uses in (0, 1, 2, 23, 24, 255, 65_536, 2**32 - 1, 2**40):
            lane = _request.Lane(b"", b"", b"", b"", b"", b"", b"", ttl, uses)
            issued = [Issued(finish(unsigned, signature), ttl, uses, b"", ("/a", "read"))]
            assert lane.answer(unsigned, signature, 1_800_000_000) == \
                token_response_cbor(issued, 1_800_000_000, False), (ttl, uses)


def test_the_issuer_answers_and_records_the_same_with_and_without_native_lanes(tmp_path, monkeypatch):
    """Through Issuer.token: the same statuses, the same answers and audit records but for the token ids
    and signatures, and the same refusals, whether the lanes' bytes and the MAC are written in C or Python."""
    import asyncio
    import json

    from crumb import Verifier
    from crumb.issuer import audit, issuing
    from crumb.issuer.app import Settings, build_issuer
    from crumb.issuer.datadir import DataDir
    from crumb.issuer.protocol import build_request, parse_response
    from crumb.replay import MemoryReplayStore

    from .policies import POLICY

    now = 1_800_000_000
    (tmp_path / "p.toml").write_text(POLICY)
    runs = {}
    for native in (True, False):
        if not native:
            monkeypatch.setattr(issuing, "_NativeLane", None)
        issuer = build_issuer(Settings(DataDir(tmp_path / f"data-{native}"), tmp_path / "p.toml"))
        issuer.macs = DeviceMacs(MASTER, native=native)
        issuer.clock = lambda: now + 0.2505
        issuer.registry.add("dev-a", "sensors")
        key = derive_device_key(MASTER, "dev-a")
        requests = [build_request("dev-a", key, [("/sensors/t", "read")], nonce=bytes([i]) * 8, now=now)
                    for i in range(3)]
        requests.append(requests[0])  # replayed
        requests.append(build_request("dev-a", bytes(32), [("/sensors/t", "read")], nonce=b"x" * 8, now=now))
        requests.append(build_request("dev-a", key, [("/elsewhere", "read")], nonce=b"y" * 8, now=now))

        async def main() -> list:
            issuer.audit.start()
            answers = [await issuer.token(r, "cbor", '1.2.3."4"') for r in requests]
            await issuer.audit.stop()
            return answers

        answers = asyncio.run(main())
        assert all(type(lane.native) is (_request.Lane if native else type(None)) for lane in issuer._lanes.values())
        verifier = Verifier([issuer.keyring.current.public], replay=MemoryReplayStore(fence=False),
                            clock=lambda: now + 1)
        shapes, ids = [], []
        for status, body, retry in answers:
            answer = cbor.loads(body)
            if status == 200:
                claims = verifier.verify(answer[1], "/sensors/t", "read")
                ids.append(claims.claims.cti.hex())
                answer[1] = len(answer[1])
            shapes.append((status, answer, retry))
        records = []
        for r in audit.records(issuer.audit.path):
            data = r.data
            if data.get("tokens"):
                assert data["tokens"] == [ids.pop(0)]
                data["tokens"] = ["?"]
                assert data.pop("kid") == issuer.keyring.current.kid.hex()  # each data dir has its own key
            records.append(data)
        runs[native] = (shapes, records)
        issuer.registry.close()
    assert runs[True] == runs[False]
    assert [r.get("code", r["event"]) for r in runs[True][1]] == \
        ["issued", "issued", "issued", "replayed", "bad_mac", "scope_denied"]
