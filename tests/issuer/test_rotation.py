"""Audit log rotation: segments whose chains link, under load, on both writers, and the real issuer process."""

from __future__ import annotations

import asyncio
import itertools
import os

import httpx
import pytest

from crumb.issuer import _native, audit
from crumb.issuer.audit import AuditLog
from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import Keyring
from crumb.keys import SigningKey
from crumb.replay import MemoryReplayStore
from crumb.tooling.localissuer import LocalIssuer
from crumb.verify import Verifier

from .conftest import Fleet, crumb_cli
from .test_commit import NATIVE_ONLY, WRITERS
from .test_disk_full import CLIENTS, POLICY, Load, issued


def appended(path, n: int, segment_records: int, concurrency: int = 16) -> tuple[list, AuditLog]:
    key = SigningKey.generate()

    async def main() -> tuple[list, AuditLog]:
        log = AuditLog(path, segment_records=segment_records)
        log.start()
        results: list = []

        async def writer(k: int) -> None:
            for i in range(k, n, concurrency):
                if i % 2:
                    results.append(await log.append({"n": i}))
                else:
                    seq, sigs = await log.append_signed(b'{"n":%d}' % i, key, [b"m%d" % i])
                    assert sigs == [key.sign(b"m%d" % i)]
                    results.append(seq)

        await asyncio.gather(*(writer(k) for k in range(concurrency)))
        await log.stop()
        return results, log

    return asyncio.run(main())


@WRITERS
def test_rotation_under_concurrent_appends_loses_and_repeats_nothing(tmp_path, monkeypatch, native):
    monkeypatch.setattr(_native, "NATIVE", native)
    chain = tmp_path / "audit.db"
    seqs, log = appended(chain, 1000, 100)
    assert sorted(seqs) == list(range(1, 1001))
    found = audit.segments(chain)
    assert [k for k, _ in found] == list(range(1, len(found) + 1)) and len(found) >= 9, found
    assert log.rotations == len(found) - 1 and log.rotation_errors == 0
    sizes = [sum(1 for _ in audit._segment_records(p)) for _, p in found]
    assert sum(sizes) == 1000 and all(s >= 100 for s in sizes[:-1]), sizes
    v = audit.verify(chain)
    assert v.ok and (v.count, v.rows, v.segments) == (1000, 1000, len(found))
    # Each segment's first record links to the previous segment's last.
    for (_, a), (_, b) in itertools.pairwise(found):
        assert list(audit._segment_records(a))[-1].hash == next(audit._segment_records(b)).prev
    # A restarted writer carries on in the newest segment, from the chain's head.
    more, _ = appended(chain, 10, 100, 1)
    assert more == list(range(1001, 1011)) and audit.verify(chain).count == 1010


def test_records_and_tail_read_across_segments(tmp_path):
    chain = tmp_path / "audit.db"
    appended(chain, 30, 10, 1)
    assert [r.seq for r in audit.records(chain)] == list(range(1, 31))
    assert [r.seq for r in audit.records(chain, after=17)] == list(range(18, 31))
    assert [r.seq for r in audit.last(chain, 15)] == list(range(16, 31))


def test_a_record_repeated_in_a_later_segment_breaks_the_chain(tmp_path):
    chain = tmp_path / "audit.db"
    appended(chain, 30, 10, 1)
    seg2 = audit.segment_path(chain, 2)
    rec = next(audit._segment_records(seg2))
    conn = audit.connect(audit.segment_path(chain, 3))
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", tuple(rec))  # a copy of segment 2's first record
    conn.close()
    v = audit.verify(chain)
    assert not v.ok and f"record {rec.seq} appears a second time (in {audit.segment_path(chain, 3).name})" in v.reason


def test_a_missing_middle_segment_breaks_the_chain(tmp_path):
    chain = tmp_path / "audit.db"
    appended(chain, 30, 10, 1)
    for suffix in ("", "-wal", "-shm"):
        path = audit.segment_path(chain, 2)
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    v = audit.verify(chain)
    assert not v.ok and "segment 2 of audit.db is missing" in v.reason


def test_without_the_first_segments_and_no_anchor_the_chain_is_unproven(tmp_path):
    chain = tmp_path / "audit.db"
    appended(chain, 30, 10, 1)
    for suffix in ("", "-wal", "-shm"):
        chain.with_name(chain.name + suffix).unlink(missing_ok=True)
    v = audit.verify(chain)
    assert not v.ok and "no anchor" in v.reason
    assert os.path.exists(audit.segment_path(chain, 2))


@pytest.mark.parametrize("bad", ["{", '{"segment": 1, "seq": 5, "hash": "00"}', '{"segment": 2, "seq": 10}'])
def test_a_malformed_anchor_fails(tmp_path, bad):
    chain = tmp_path / "audit.db"
    appended(chain, 30, 10, 1)
    audit.anchor_path(chain).write_text(bad)
    v = audit.verify(chain)
    assert not v.ok and "not a valid anchor" in v.reason


@pytest.mark.parametrize("native", [pytest.param("1", marks=NATIVE_ONLY), "0"], ids=["native", "python"])
def test_the_issuer_rotates_under_load_and_every_answered_token_is_recorded_once(tmp_path, monkeypatch, native):
    """The real issuer process, rotating every 300 records while six clients ask for tokens."""
    monkeypatch.setenv("CRUMB_NATIVE", native)
    data = tmp_path / "data"
    DataDir(data).create()
    (tmp_path / "policy.toml").write_text(POLICY)
    issuer = LocalIssuer(data, tmp_path / "policy.toml", args=("--audit-segment-records", "300"))
    issuer.start()
    try:
        fleet = Fleet(data, issuer.url)
        for i in range(CLIENTS):
            fleet.enroll(f"dev-{i}", "sensors")
        with Load(fleet) as load:
            load.wait_for(issued, 3000)
        metrics = httpx.get(f"{issuer.url}/metrics", timeout=30).text
    finally:
        issuer.stop()
    rotations = int(next(line.split()[-1] for line in metrics.splitlines()
                         if line.startswith("crumb_issuer_audit_rotations_total")))
    chain = DataDir(data).audit
    found = audit.segments(chain)
    assert rotations >= 9 and len(found) == rotations + 1, (rotations, found)
    v = audit.verify(chain)
    assert v.ok and v.segments == len(found), v
    ring = Keyring.open(data / "keys", create=False)
    verifier = Verifier([ring.current.public], replay=MemoryReplayStore(fence=False))
    answered = [verifier.verify(a.tokens[0][0], "/sensors/t", "read").claims.cti.hex()
                for a in load.answers if issued(a)]
    recorded = [cti for rec in audit.records(chain) if rec.data["event"] == "issued" for cti in rec.data["tokens"]]
    assert len(answered) >= 3000 and sorted(answered) == sorted(recorded)  # none lost, none twice
    out = crumb_cli("audit", "verify", "--data", str(data))
    assert out.returncode == 0 and f"{v.count} records in {len(found)} segments" in out.stdout, out.stdout


def test_bench_audit_prints_its_figures():
    out = crumb_cli("bench", "audit", "--records", "400", "--segment-records", "100", "--rounds", "1", "--json",
                    check=True)
    import json

    r = json.loads(out.stdout)
    assert r["records"] == 400 and r["segments"] >= 4 and r["rotations_measured"] == r["segments"] - 1
    for key in ("rotation_ms_median", "append_ratio_rotating_to_one", "verify_ratio_segments_to_one",
                "archive_records_per_s_median"):
        assert r[key] > 0, key
