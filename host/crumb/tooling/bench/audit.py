"""`crumb bench audit`: what rotation costs, and how fast a chain verifies across segments.

Each round writes the same N issuance records (the issuer's own record
text, IssuedRecord) through the issuer's audit writer (native unless
CRUMB_NATIVE=0), from concurrent appenders as a busy issuer would, twice:
rotating every M records, and in one segment. It then verifies both chains
(audit.verify, as `crumb audit verify` does) and archives the closed
segments (crumb audit archive). Figures are medians over the rounds:

  - each rotation, from its hand-over to the writer until the writer has
    switched (it waits for the batches handed over before it, then creates
    the next segment's file; the event loop does not wait for it);
  - append throughput rotating and not, and their ratio (rotation's whole cost);
  - verify throughput across segments and in one, and their ratio;
  - archive throughput (copy + offline verification), records/s.

Absolute figures depend on the machine (and on its disk: synchronous=FULL
fsyncs every commit); compare within one run. A new segment's WAL grows
with each commit until SQLite's first checkpoint lets it wrap (about 13,000
records), and a growing file costs more per fsync than one written in
place: segments much smaller than the default million records make the
append ratio look worse than it is at the default.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import click

APPENDERS = 64


def _write(path: Path, records: int, segment_records: int) -> tuple[float, list[float], int]:
    """(seconds, seconds per rotation, segments) to append ``records`` records."""
    from ...issuer.audit import AuditLog, IssuedRecord, segments

    template = IssuedRecord(device="dev-0001", scope=[("/sensors/temp01", "publish")], count=1,
                            kid="c8cefa52a1b2c3d4", rules=["groups.sensors.allow[0]"])

    async def main() -> tuple[float, list[float]]:
        log = AuditLog(path, segment_records=segment_records)
        log.start()

        async def appender(k: int) -> None:
            for i in range(k, records, APPENDERS):
                body = template.body_one(1_795_930_000_000 + i, 1_795_930_120, "10.0.4.17", os.urandom(8).hex())
                await log.append_body(body)

        started = time.perf_counter()
        await asyncio.gather(*(appender(k) for k in range(APPENDERS)))
        await log.stop()
        return time.perf_counter() - started, log.rotation_seconds

    seconds, rotations = asyncio.run(main())
    return seconds, rotations, len(segments(path))


def run(records: int, segment_records: int, rounds: int) -> dict:
    from ...issuer import _native
    from ...issuer.archive import archive
    from ...issuer.audit import verify

    append_rot, append_one, verify_rot, verify_one, archive_rate, rotation_ms = [], [], [], [], [], []
    segments = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="crumb-bench-audit-") as tmp:
            rot, one = Path(tmp) / "rot" / "audit.db", Path(tmp) / "one" / "audit.db"
            rot.parent.mkdir()
            one.parent.mkdir()
            # In turn first and second, so that neither gains from the order (a warm disk cache, say).
            for which in ((rot, one) if len(append_rot) % 2 == 0 else (one, rot)):
                if which is rot:
                    seconds, rotations, segments = _write(rot, records, segment_records)
                    append_rot.append(records / seconds)
                    rotation_ms += [s * 1000 for s in rotations]
                else:
                    seconds, _, _ = _write(one, records, 0)
                    append_one.append(records / seconds)
            for path, out in ((rot, verify_rot), (one, verify_one)):
                started = time.perf_counter()
                verdict = verify(path)
                out.append(verdict.rows / (time.perf_counter() - started))
                if not verdict.ok or verdict.rows != records:
                    raise click.ClickException(f"the bench's own chain does not verify: {verdict.reason}")
            started = time.perf_counter()
            result = archive(rot, Path(tmp) / "archive")
            if not result["ok"]:
                raise click.ClickException(f"the bench's archive does not verify: {result['reason']}")
            archive_rate.append(result["records"] / (time.perf_counter() - started))

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 1) if xs else 0.0

    return {
        "writer": "native" if _native.NATIVE else "python",
        "records": records, "segment_records": segment_records, "segments": segments, "rounds": rounds,
        "rotation_ms_median": round(statistics.median(rotation_ms), 3) if rotation_ms else None,
        "rotations_measured": len(rotation_ms),
        "append_records_per_s_rotating_median": med(append_rot),
        "append_records_per_s_one_segment_median": med(append_one),
        "append_ratio_rotating_to_one": round(med(append_rot) / med(append_one), 3),
        "verify_records_per_s_segments_median": med(verify_rot),
        "verify_records_per_s_one_segment_median": med(verify_one),
        "verify_ratio_segments_to_one": round(med(verify_rot) / med(verify_one), 3),
        "archive_records_per_s_median": med(archive_rate),
    }


@click.command("audit")
@click.option("--records", default=100_000, show_default=True, type=click.IntRange(min=100),
              help="Records written per chain and round.")
@click.option("--segment-records", default=10_000, show_default=True, type=click.IntRange(min=10),
              help="Rotate after this many records.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1), help="Rounds (medians).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(records: int, segment_records: int, rounds: int, as_json: bool) -> None:
    """Audit log rotation cost and verify speed across segments (medians)."""
    result = run(records, segment_records, rounds)
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    r = result
    click.echo(f"audit writer {r['writer']}: {r['records']:,} records, {r['segments']} segments of "
               f"{r['segment_records']:,}, {r['rounds']} rounds (medians)")
    click.echo(f"  rotation, hand-over to switched {r['rotation_ms_median']} ms each ({r['rotations_measured']} rotations)")
    click.echo(f"  append, rotating          {r['append_records_per_s_rotating_median']:,.0f} records/s")
    click.echo(f"  append, one segment       {r['append_records_per_s_one_segment_median']:,.0f} records/s  "
               f"(ratio {r['append_ratio_rotating_to_one']})")
    click.echo(f"  verify, across segments   {r['verify_records_per_s_segments_median']:,.0f} records/s")
    click.echo(f"  verify, one segment       {r['verify_records_per_s_one_segment_median']:,.0f} records/s  "
               f"(ratio {r['verify_ratio_segments_to_one']})")
    click.echo(f"  archive + offline verify  {r['archive_records_per_s_median']:,.0f} records/s")
