"""Faults: the disk under the audit log fills up, or turns read-only, with the real issuer process serving (issue 16).

The issuer's data directory lives on a small tmpfs mounted for the test (so
the test runs as root, as `make test` does here; it fails, never skips, when
it cannot mount). While clients ask for tokens the disk is filled to the last
byte: the issuer must refuse with store_unavailable (503, Retry-After) and
never answer a token whose record is not committed; once space returns it
issues again, and afterwards the log verifies and holds every token that was
answered. Both audit writers: native (commit.c) and Python (CRUMB_NATIVE=0).

Read-only: an ext4 image, loop-mounted with errors=remount-ro, gets a real
file-system error (ext4's trigger_fs_error) under the running issuer, and
under a bare AuditLog committing in a loop, several rounds: the commits that
fdatasync confirmed in the moments after the error are exactly where the
kernel loses data (audit.commit_doubt says how), so every confirmed record
must still be there once the file system is mounted again.

Also: a segment file deleted under the writer makes its commits count as
failed (they would land in a file nobody can read).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx
import pytest

from crumb.issuer import _native, audit
from crumb.issuer.audit import AuditLog, AuditUnavailable
from crumb.issuer.datadir import DataDir
from crumb.issuer.keystore import Keyring
from crumb.replay import MemoryReplayStore
from crumb.tooling.issuerclient import IssuerClient
from crumb.tooling.localissuer import LocalIssuer
from crumb.verify import Verifier

from .conftest import Fleet, crumb_cli
from .test_commit import NATIVE_ONLY

POLICY = """
[issuer]
name = "crumb-test"
url = "http://127.0.0.1:1"

[defaults]
rate = 100000
burst = 100000

[[groups.sensors.allow]]
resource = "/sensors/*"
operations = ["read"]
"""

FS_BYTES = 16 << 20
CLIENTS = 6


@contextmanager
def small_fs(where: Path, size: int):
    """A tmpfs of ``size`` bytes at ``where``, unmounted on the way out whatever happened."""
    if os.geteuid() != 0:
        pytest.fail("the disk-full test mounts a small tmpfs and needs root (make test runs as root here); "
                    "run it as root", pytrace=False)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "crumb-disk-full", str(where)],
                   check=True, capture_output=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)  # still busy: detach it


def fill(path: Path) -> int:
    """Write ``path`` until the file system has not one byte left; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


class Load:
    """Clients asking for one token each, over and over, in threads; every answer is kept."""

    def __init__(self, fleet: Fleet) -> None:
        self.clients = [IssuerClient(fleet.credentials(f"dev-{i}"), client=httpx.Client(timeout=120))
                        for i in range(CLIENTS)]
        self.answers: list = []  # (status class: "token" or code, response)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(c,)) for c in self.clients]

    def _run(self, client: IssuerClient) -> None:
        while not self.stop.is_set():
            resp = client.request([("/sensors/t", "read")])
            with self.lock:
                self.answers.append(resp)

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        for c in self.clients:
            c.close()

    def wait_for(self, what, count: int, limit: float = 120.0) -> None:
        """Until ``count`` answers satisfy ``what`` (the limit only catches a hang)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                if sum(1 for a in self.answers if what(a)) >= count:
                    return
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} matching answers in {limit}s: {self.summary()}")

    def summary(self) -> dict:
        with self.lock:
            out: dict = {}
            for a in self.answers:
                key = "token" if a.tokens else a.code
                out[key] = out.get(key, 0) + 1
            return out


def issued(a) -> bool:
    return bool(a.tokens)


def refused(a) -> bool:
    return not a.tokens


@pytest.mark.parametrize("native", [pytest.param("1", marks=NATIVE_ONLY), "0"], ids=["native", "python"])
def test_a_full_disk_stops_issuance_and_no_token_goes_out_without_its_record(tmp_path, monkeypatch, native):
    monkeypatch.setenv("CRUMB_NATIVE", native)
    with small_fs(tmp_path / "fs", FS_BYTES) as fs:
        data = fs / "data"
        DataDir(data).create()
        config = tmp_path / "policy.toml"  # off the small disk: only the data directory fills up
        config.write_text(POLICY)
        issuer = LocalIssuer(data, config)
        issuer.start()
        try:
            writer = "native" if native == "1" else "Python"
            assert f"audit writer {writer}" in issuer.log_tail(), issuer.log_tail()
            fleet = Fleet(data, issuer.url)
            for i in range(CLIENTS):
                fleet.enroll(f"dev-{i}", "sensors")
            with Load(fleet) as load:
                load.wait_for(issued, 200)  # issuing under load
                fill(fs / "filler")         # then not one byte left
                load.wait_for(refused, 50)  # refusing under load
                health = httpx.get(f"{issuer.url}/healthz", timeout=30).json()
                assert health["audit"].startswith("failing"), health
                before = len([a for a in load.answers if issued(a)])
                (fs / "filler").unlink()    # space returns
                load.wait_for(issued, before + 200)
            assert httpx.get(f"{issuer.url}/healthz", timeout=30).json()["audit"] == "ok"
        finally:
            issuer.stop()
        answers = load.answers
        refusals = [a for a in answers if not issued(a)]
        assert refusals and {(a.code, a.retry_after) for a in refusals} == {("store_unavailable", 1)}
        # Why: the disk is full (or, native, the batch queued behind the failed one waits for the head).
        assert any("disk is full" in a.message for a in refusals)
        assert all(a.message.startswith("the audit log cannot commit") for a in refusals), {a.message for a in refusals}
        # Every token answered is a real token and has its record; the log verifies end to end.
        ring = Keyring.open(data / "keys", create=False)
        verifier = Verifier([ring.current.public], replay=MemoryReplayStore(fence=False))
        answered = {verifier.verify(a.tokens[0][0], "/sensors/t", "read").claims.cti.hex() for a in answers if issued(a)}
        logs = DataDir(data).audit_logs()
        assert [v.ok for v in map(audit.verify, logs)] == [True] * len(logs)
        recorded = {cti for path in logs for rec in audit.records(path)
                    if rec.data["event"] == "issued" for cti in rec.data["tokens"]}
        assert answered <= recorded, f"{len(answered - recorded)} tokens answered without a record"
        # And the tokens the refused requests were minted with never left: one issued record per token answered.
        assert len(recorded) == len(answered)
        assert crumb_cli("audit", "verify", "--data", str(data)).returncode == 0


@pytest.mark.parametrize("native", [pytest.param(True, marks=NATIVE_ONLY), False], ids=["native", "python"])
def test_a_segment_deleted_under_the_writer_fails_its_commits(tmp_path, monkeypatch, native):
    """SQLite commits into the open, unlinked file and says ok: the writer checks the file is still there."""
    monkeypatch.setattr(_native, "NATIVE", native)
    path = tmp_path / "audit.db"

    async def main() -> None:
        log = AuditLog(path)
        log.start()
        assert await log.append({"n": 1}) == 1
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        with pytest.raises(AuditUnavailable, match="segment file is gone"):
            await asyncio.wait_for(log.append({"n": 2}), 30)
        assert not log.healthy
        await log.stop()

    asyncio.run(main())


# -- a disk that turns read-only -------------------------------------------------------------


@contextmanager
def ext4_image(image: Path, where: Path, size: int):
    """An ext4 file system in ``image``, loop-mounted at ``where`` with errors=remount-ro, unmounted on the way out."""
    if os.geteuid() != 0:
        pytest.fail("the read-only disk tests loop-mount an ext4 image and need root (make test runs as root here)",
                    pytrace=False)
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)  # still busy: detach it


def remount_after_repair(image: Path, where: Path) -> None:
    """What an operator does: unmount, mount once (the kernel replays the journal: what was committed there
    is there), unmount, repair, mount again. (e2fsck straight away may drop the journal of a file system in
    error, and with it writes that were committed.)"""
    mount = ["mount", "-o", "loop,errors=remount-ro", str(image), str(where)]
    subprocess.run(["umount", str(where)], check=True, capture_output=True)
    subprocess.run(mount, check=True, capture_output=True)
    subprocess.run(["umount", str(where)], check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fy", str(image)], check=False, capture_output=True)  # exit 1: "errors corrected"
    subprocess.run(mount, check=True, capture_output=True)


def turn_read_only(where: Path) -> None:
    """The kernel's own response to a file-system error (errors=remount-ro): every write fails from then on.

    ext4's trigger_fs_error (in sysfs) raises a real error in the file
    system; a plain `mount -o remount,ro` is refused while files are open
    for writing, which is exactly the issuer's situation. The write returns
    once ext4 has handled the error (~10-40 ms here: it aborts the journal,
    writes both superblocks, then sets its emergency read-only flag).
    """
    source = subprocess.run(["findmnt", "-no", "SOURCE", str(where)], check=True, capture_output=True,
                            text=True).stdout.strip()
    Path(f"/sys/fs/ext4/{Path(source).name}/trigger_fs_error").write_text("crumb test: disk goes read-only")


@pytest.mark.parametrize("native", [pytest.param("1", marks=NATIVE_ONLY), "0"], ids=["native", "python"])
def test_a_disk_that_turns_read_only_stops_issuance_and_no_token_goes_out_without_its_record(tmp_path, monkeypatch,
                                                                                              native):
    monkeypatch.setenv("CRUMB_NATIVE", native)
    image, where = tmp_path / "disk.img", tmp_path / "fs"
    config = tmp_path / "policy.toml"
    config.write_text(POLICY)
    with ext4_image(image, where, 64 << 20) as fs:
        data = fs / "data"
        DataDir(data).create()
        issuer = LocalIssuer(data, config)
        issuer.start()
        try:
            fleet = Fleet(data, issuer.url)
            for i in range(CLIENTS):
                fleet.enroll(f"dev-{i}", "sensors")
            with Load(fleet) as load:
                load.wait_for(issued, 200)
                turn_read_only(fs)
                load.wait_for(refused, 50)
            health = httpx.get(f"{issuer.url}/healthz", timeout=30)
            assert health.status_code == 503 and health.json()["audit"].startswith("failing"), health.text
        finally:
            issuer.stop()
        answers = load.answers
        refusals = [a for a in answers if not issued(a)]
        assert {(a.code, a.retry_after) for a in refusals} == {("store_unavailable", 1)}
        assert all(a.message.startswith("the audit log cannot commit") for a in refusals), {a.message for a in refusals}
        remount_after_repair(image, fs)
        ring = Keyring.open(data / "keys", create=False)
        verifier = Verifier([ring.current.public], replay=MemoryReplayStore(fence=False))
        answered = {verifier.verify(a.tokens[0][0], "/sensors/t", "read").claims.cti.hex() for a in answers if issued(a)}
        logs = DataDir(data).audit_logs()
        assert [audit.verify(p).ok for p in logs] == [True] * len(logs)
        recorded = {cti for path in logs for rec in audit.records(path)
                    if rec.data["event"] == "issued" for cti in rec.data["tokens"]}
        assert answered <= recorded, f"{len(answered - recorded)} tokens answered without a record"
        # Not equality: a commit whose frames reached the disk but that the writer could not trust
        # (its fsync failed, or the probe after it did) is refused, yet SQLite may find it committed
        # after the repair. A record may stand for a token never sent; never the other way round.
        before = audit.verify(DataDir(data).audit).count
        # Writable again (an operator's repair and a restart): the issuer issues, and the chain goes on.
        issuer = LocalIssuer(data, config)
        issuer.start()
        try:
            client = IssuerClient(Fleet(data, issuer.url).credentials("dev-0"))
            assert client.request([("/sensors/t", "read")]).tokens
            client.close()
        finally:
            issuer.stop()
        v = audit.verify(DataDir(data).audit)
        assert v.ok and v.count == before + 1


ROUNDS = 20


def commit_through_the_error(fs: Path) -> tuple[list[int], list[str]]:
    """Two tasks append one record at a time to an AuditLog on ``fs`` while ext4 handles an error there:
    (the seqs confirmed, the refusals)."""
    confirmed: list[int] = []
    refusals: list[str] = []

    async def main() -> None:
        log = AuditLog(fs / "audit.db")
        log.start()

        async def append(k: int) -> None:
            i = 0
            while len(refusals) < 20:
                try:
                    confirmed.append(await log.append({"writer": k, "n": i}))
                except AuditUnavailable as e:
                    refusals.append(str(e))
                    await asyncio.sleep(0.002)
                i += 1

        try:
            tasks = [asyncio.create_task(append(k)) for k in range(2)]
            while len(confirmed) < 300:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(turn_read_only, fs)  # the loop appends on meanwhile
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert not log.healthy
        finally:
            await log.stop()

    asyncio.run(main())
    return confirmed, refusals


@pytest.mark.parametrize("native", [pytest.param(True, marks=NATIVE_ONLY), False], ids=["native", "python"])
def test_no_commit_the_writer_confirms_is_lost_when_ext4_turns_read_only(tmp_path, monkeypatch, native):
    """The race itself, in several rounds: commits confirmed just after a file-system error must all be on disk.

    A commit every few ms while ext4 handles the error. Without the probe
    after each commit (audit.commit_doubt, commit.c's commit_doubt), rounds
    lost the last confirmed record or two, on both writers (kernel 6.18).
    """
    monkeypatch.setattr(_native, "NATIVE", native)
    caught = 0
    for n in range(ROUNDS):
        image = tmp_path / f"disk-{n}.img"
        with ext4_image(image, tmp_path / f"fs-{n}", 32 << 20) as fs:
            confirmed, refusals = commit_through_the_error(fs)
            caught += any("stopped taking writes" in r for r in refusals)
            remount_after_repair(image, fs)
            durable = {rec.seq for rec in audit.records(fs / "audit.db")}
            assert set(confirmed) <= durable, f"round {n}: confirmed, then lost: {sorted(set(confirmed) - durable)}"
            assert audit.verify(fs / "audit.db").ok
    print(f"{caught} of {ROUNDS} rounds: the probe refused a commit SQLite had confirmed")
