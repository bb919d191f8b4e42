"""`crumb audit archive` and `crumb audit prune`: closed segments exported, verified offline, deleted only when safe."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import pytest

from crumb.issuer import audit
from crumb.issuer.archive import ArchiveError, _write_anchor, archive, closed_segments, prune, summary
from crumb.issuer.audit import AuditLog
from crumb.issuer.datadir import DataDir

from .conftest import crumb_cli
from .test_rotation import appended


def make(tmp_path, n: int = 50, per: int = 10):
    data = DataDir(tmp_path / "data").create()
    appended(data.audit, n, per, 1)
    return data


def cli(*args: str):
    return crumb_cli("audit", *args)


def test_only_closed_segments_are_archived_and_the_archive_verifies_alone(tmp_path):
    data = make(tmp_path)
    found = audit.segments(data.audit)
    assert len(found) == 5 and [k for k, _ in closed_segments(data.audit)] == [1, 2, 3, 4]
    out = cli("archive", "--data", str(data.root), "--to", str(tmp_path / "arch"), "--json")
    result = json.loads(out.stdout)["chains"][0]
    assert out.returncode == 0 and result["ok"] and result["records"] == 40 and len(result["copied"]) == 4
    assert not (tmp_path / "arch" / audit.segment_path(data.audit, 5).name).exists()  # the live one stays
    # Standalone: only the archive, moved elsewhere, no keys, no data directory.
    shutil.move(tmp_path / "arch", tmp_path / "moved")
    offline = cli("verify", "--data", str(tmp_path / "moved"))
    assert offline.returncode == 0 and "audit.db: ok: 40 records in 4 segments" in offline.stdout
    # Archiving again copies nothing new, and checks what is there.
    again = json.loads(cli("archive", "--data", str(data.root), "--to", str(tmp_path / "moved"), "--json").stdout)
    assert again["chains"][0]["copied"] == [] and again["ok"]


def test_an_archived_segment_that_differs_is_refused(tmp_path):
    data = make(tmp_path)
    archive(data.audit, tmp_path / "arch")
    conn = sqlite3.connect(audit.segment_path(tmp_path / "arch" / "audit.db", 2))
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    conn.commit()
    conn.close()
    with pytest.raises(ArchiveError, match="differs"):
        archive(data.audit, tmp_path / "arch")
    assert cli("archive", "--data", str(data.root), "--to", str(tmp_path / "arch")).returncode == 1


def test_prune_deletes_only_archived_segments_and_the_rest_verifies_from_the_anchor(tmp_path):
    data = make(tmp_path)
    arch = tmp_path / "arch"
    # Nothing archived: nothing is deleted, whatever the retention says.
    assert prune(data.audit, tmp_path, keep=1)["deleted"] == []
    archive(data.audit, arch)
    out = cli("prune", "--data", str(data.root), "--archive", str(arch), "--keep", "2")
    assert out.returncode == 0 and "deleted audit.db, audit.000002.db, audit.000003.db" in out.stdout
    assert [k for k, _ in audit.segments(data.audit)] == [4, 5]
    anchor = json.loads(audit.anchor_path(data.audit).read_text())
    assert (anchor["segment"], anchor["seq"]) == (4, 30)
    # The data directory alone: the chain continues from the anchor.
    here = cli("verify", "--data", str(data.root))
    assert here.returncode == 0 and "20 records in 2 segments (records 31 on, after the anchor)" in here.stdout
    # With the archive: one chain from record 1, the anchor on it.
    whole = cli("verify", "--data", str(data.root), "--archive", str(arch), "--json")
    chain = json.loads(whole.stdout)["chains"][0]
    assert whole.returncode == 0 and (chain["records"], chain["first"], chain["segments"]) == (50, 1, 5)
    # A head noted before the pruning is in the archive: found with it, not without it.
    head40 = audit.last(arch / "audit.db", 1)[0].hash  # the archive's last record, number 40: still here too
    assert audit.verify(data.audit, head40).ok

    first_head = next(audit.records(arch / "audit.db")).hash
    assert not audit.verify(data.audit, first_head).ok and audit.verify(data.audit, first_head, arch).ok


def test_a_forged_anchor_is_caught_against_the_archive(tmp_path):
    data = make(tmp_path)
    archive(data.audit, tmp_path / "arch")
    prune(data.audit, tmp_path / "arch", keep=2)
    doc = json.loads(audit.anchor_path(data.audit).read_text())
    doc["hash"] = "11" * 32
    audit.anchor_path(data.audit).write_text(json.dumps(doc))
    alone = audit.verify(data.audit)
    assert not alone.ok and "does not link" in alone.reason
    v = audit.verify(data.audit, archive=tmp_path / "arch")
    assert not v.ok and "does not follow the anchor" in v.reason


def test_keep_days_keeps_recent_segments(tmp_path):
    data = DataDir(tmp_path / "data").create()
    day = 86400 * 1000

    async def main() -> None:  # six segments of five records, segment d written on day d
        log = AuditLog(data.audit, segment_records=5)
        log.start()
        for i in range(30):
            await log.append({"t": (i // 5) * day, "event": "refused"})
        await log.stop()

    asyncio.run(main())
    archive(data.audit, tmp_path / "arch")
    now = 10 * 86400  # day 10: segments end on days 0..5
    assert prune(data.audit, tmp_path / "arch", keep=1, keep_days=20, now=now)["deleted"] == []
    gone = prune(data.audit, tmp_path / "arch", keep=1, keep_days=7.5, now=now)["deleted"]
    assert gone == ["audit.db", "audit.000002.db", "audit.000003.db"]  # days 0, 1, 2 are older than 7.5 days
    assert audit.verify(data.audit).ok


def test_a_pruning_cut_short_still_verifies(tmp_path):
    """The anchor is written first: a crash before the files go leaves them, and verify checks the anchor on the way."""
    data = make(tmp_path)
    archive(data.audit, tmp_path / "arch")
    seg3 = audit.segment_path(data.audit, 3)

    s = summary(audit.segment_path(data.audit, 3))
    _write_anchor(data.audit, 4, s.last, s.head)  # as prune does, then "crash": no file deleted
    for suffix in ("", "-wal", "-shm"):
        data.audit.with_name(data.audit.name + suffix).unlink(missing_ok=True)  # only segment 1 went
    v = audit.verify(data.audit)
    assert v.ok and v.first == 11 and seg3.exists()
