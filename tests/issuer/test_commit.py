"""The commit step: tokens signed and records chained by the audit writer, natively or on the loop.

The native step (crumb._commit) must be built in the test environment: a
missing compiler fails here, loudly, instead of quietly testing only the
slower path.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from crumb.issuer import audit, commit
from crumb.issuer.app import Settings, build_issuer
from crumb.issuer.audit import AuditLog, record_hash
from crumb.issuer.datadir import DataDir
from crumb.issuer.protocol import build_request, derive_device_key, parse_response
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.verify import Verifier

from .policies import POLICY


def test_the_native_commit_step_is_built():
    assert commit._native is not None, (
        "crumb._commit is not built: the issuer would sign on its event loop. Install a C compiler and the "
        "Python headers, then `make setup` (pip install -e .) again")
    assert commit.NATIVE or os.environ.get("CRUMB_NATIVE_COMMIT") == "0"


def _python_chain(prev: bytes, seq: int, bodies: list[bytes]) -> list[bytes]:
    out = []
    for body in bodies:
        prev = record_hash(prev, seq, body)
        out.append(prev)
        seq += 1
    return out


def test_native_signatures_and_chain_equal_python():
    key = SigningKey.generate()
    messages = [os.urandom(n) for n in (0, 1, 63, 64, 65, 139, 400, 5000)]
    bodies = [os.urandom(n) for n in (0, 10, 300, 70_000)]
    prev = os.urandom(32)
    sigs, hashes = commit.sign_and_chain(key, messages, prev, 41, bodies)
    assert sigs == [key.sign(m) for m in messages]
    assert all(key.public.verify(m, s) for m, s in zip(messages, sigs))
    assert hashes == _python_chain(prev, 41, bodies)
    assert commit.chain(prev, 41, bodies) == hashes
    assert commit.sign_and_chain(key, [], prev, 1, []) == ([], [])


def test_native_step_rejects_what_it_cannot_take():
    native = commit._native
    sk, prev = SigningKey.generate().secret_bytes, bytes(32)
    args = (commit._SIGN, commit._SHA256)
    with pytest.raises(ValueError, match="64 bytes"):
        native.sign_and_chain(*args, sk[:32], [b"m"], prev, 1, [])
    with pytest.raises(ValueError, match="32-byte"):
        native.sign_and_chain(*args, sk, [b"m"], prev[:31], 1, [])
    with pytest.raises(TypeError, match=r"messages\[1\] is not bytes"):
        native.sign_and_chain(*args, sk, [b"m", "text"], prev, 1, [])
    with pytest.raises(TypeError, match="bodies must be a list"):
        native.sign_and_chain(*args, sk, [], prev, 1, (b"x",))
    with pytest.raises(ValueError, match="null function"):
        native.sign_and_chain(0, commit._SHA256, sk, [], prev, 1, [])
    with pytest.raises(OverflowError):
        native.sign_and_chain(*args, sk, [], prev, 2**63 - 1, [b"a", b"b"])


@pytest.mark.parametrize("native", [True, False], ids=["native", "on-the-loop"])
def test_a_batch_signed_under_two_keys_during_a_rotation(tmp_path, monkeypatch, native):
    """Records and signatures land where they belong, whichever key signed and however they batched."""
    monkeypatch.setattr(commit, "NATIVE", native)
    old, new = SigningKey.generate(), SigningKey.generate()

    async def main() -> list:
        log = AuditLog(tmp_path / "a.db")
        log.start()
        futures = []
        for i in range(12):  # queued in one turn of the loop: one or a few batches
            key = old if i % 3 else new
            if i % 4 == 3:
                futures.append((None, [], log.append({"n": i, "event": "refused"})))
            else:
                msgs = [b"token %d/%d" % (i, j) for j in range(i % 3 + 1)]
                futures.append((key, msgs, log.append_signed(b'{"n":%d}' % i, key, msgs)))
        results = [(key, msgs, await fut) for key, msgs, fut in futures]
        await log.stop()
        return results

    results = asyncio.run(main())
    seqs = []
    for key, msgs, result in results:
        if key is None:
            seqs.append(result)
            continue
        seq, sigs = result
        seqs.append(seq)
        assert sigs == [key.sign(m) for m in msgs]
    assert seqs == list(range(1, 13))
    verdict = audit.verify(tmp_path / "a.db")
    assert verdict.ok and verdict.count == 12


@pytest.mark.parametrize("native", [True, False], ids=["native", "on-the-loop"])
def test_issued_tokens_verify_on_both_paths(tmp_path, monkeypatch, native):
    monkeypatch.setattr(commit, "NATIVE", native)
    (tmp_path / "p.toml").write_text(POLICY)
    issuer = build_issuer(Settings(DataDir(tmp_path / "data"), tmp_path / "p.toml"))
    issuer.registry.add("dev-a", "sensors")
    key = derive_device_key(issuer.macs.master, "dev-a")

    async def main() -> list:
        issuer.audit.start()
        answers = await asyncio.gather(*(
            issuer.token(build_request("dev-a", key, [("/sensors/t", "read")], count=3), "cbor", "127.0.0.1")
            for _ in range(20)))
        await issuer.audit.stop()
        return answers

    answers = asyncio.run(main())
    verifier = Verifier([issuer.keyring.current.public], replay=MemoryReplayStore(fence=False))
    tokens = []
    for status, body, _ in answers:
        assert status == 200
        tokens += [t for t, _, _ in parse_response(body).tokens]
    assert len(tokens) == 60 and len(set(tokens)) == 60
    for token in tokens:
        verifier.verify(token, "/sensors/t", "read")
    verdict = audit.verify(issuer.audit.path)
    assert verdict.ok and verdict.count == 20
    issuer.registry.close()
