"""Case `changes`: membership change files at 2,000,000 members (issue 16, part 4).

One cohort of 2,000,000 members (five property columns, served through the emulator's 302
like the export case) is exported with `output.changes = true`; then about 5% of its
members are replaced through the emulator's admin API (`add_members` / `remove_members`:
2.5% leave, 2.5% others join, which moves `lastComputed`), and it is exported again. The
second run downloads the new body, writes the snapshot and computes the change file from
the two Parquet files. Measured:

- both runs' wall time and peak RSS (`os.wait4`), and the change computation's own time
  (`changes.duration_ms` of the report);
- DuckDB `EXCEPT` both ways over the same two snapshots (the peer: wall time and peak RSS),
  and whether its rows equal the change file's (`entered` = new EXCEPT old, `exited` =
  old EXCEPT new, on `(amplitude_id, user_id)`);
- the requests the second run spent (one: the change costs none).

Runs under scripts/bench/run.py (`--cases changes`, `--quick` for 200,000 members) or alone:
`python scripts/bench/case_changes.py [WORK_DIR] [MEMBERS]`.
"""
import json
import os
import shutil
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from case_export import PROPS, Emulator, app_id  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIG = 2_000_000
CHURN = 0.05

PIPELINE = """kind = "export"
name = "bench-changes"

[connection]
base_url = "{base}"
api_key = "bench-key-{i}"
secret_key = "bench-secret-{i}"
app_id = {app}

[select]
ids = ["big"]

[download]
props = true

[output]
url = "{out}"
changes = true

[quota]
reserve = 0

[state]
url = "{state}"
"""

DUCKDB = r"""
import json, resource, sys, time
import duckdb
old, new, changes = sys.argv[1:4]
t = time.perf_counter()
con = duckdb.connect()
rows = con.sql(f'''
  SELECT 'entered' AS change, count(*) FROM (
    SELECT amplitude_id, user_id FROM read_parquet('{new}')
    EXCEPT SELECT amplitude_id, user_id FROM read_parquet('{old}'))
  UNION ALL
  SELECT 'exited', count(*) FROM (
    SELECT amplitude_id, user_id FROM read_parquet('{old}')
    EXCEPT SELECT amplitude_id, user_id FROM read_parquet('{new}'))
''').fetchall()
wall = time.perf_counter() - t
# Equality with the change file, both ways (not timed).
differ = con.sql(f'''
  WITH ch AS (SELECT * FROM read_parquet('{changes}')),
  want AS (
    SELECT amplitude_id, user_id, 'entered' AS change FROM (
      SELECT amplitude_id, user_id FROM read_parquet('{new}')
      EXCEPT SELECT amplitude_id, user_id FROM read_parquet('{old}'))
    UNION ALL
    SELECT amplitude_id, user_id, 'exited' FROM (
      SELECT amplitude_id, user_id FROM read_parquet('{old}')
      EXCEPT SELECT amplitude_id, user_id FROM read_parquet('{new}')))
  SELECT (SELECT count(*) FROM (SELECT amplitude_id, user_id, change FROM ch EXCEPT SELECT * FROM want)),
         (SELECT count(*) FROM (SELECT * FROM want EXCEPT SELECT amplitude_id, user_id, change FROM ch)),
         (SELECT count(*) FROM ch)
''').fetchall()[0]
print(json.dumps({"counts": dict(rows), "wall_s": wall, "differ": list(differ[:2]), "rows": differ[2]}))
"""


def export_run(ctx, emu, work, tag, i):
    pipeline = os.path.join(work, f"changes-{tag}.toml")
    with open(pipeline, "w") as f:
        f.write(PIPELINE.format(base=emu.base, i=i, app=app_id(i),
                                out=os.path.join(work, "out"), state=os.path.join(work, "state")))
    report = os.path.join(work, f"report-{tag}.json")
    emu.log()
    run = ctx.measure([ctx.bin, "run", pipeline, "--report", report])
    with open(report) as f:
        (p,) = json.load(f)["pipelines"]
    (c,) = p["cohorts"]
    spent = [e for e in emu.log() if "/api/5/cohorts/request/" in e["path"]
             and not e["path"].endswith("/file") and e["status"] < 300]
    if c["outcome"] != "exported":
        raise SystemExit(f"{tag}: {json.dumps(c)[:2000]}")
    return run, c, len(spent)


def churn(emu, app, members):
    """Replaces CHURN of the members: half leave, as many others join."""
    url = f"{emu.base}/_emulator/apps/{app}/cohorts/big"
    with urllib.request.urlopen(url + "/members") as r:
        ids = [int(line.split(b",", 1)[0]) for line in r.read().splitlines()[1:]]
    k = int(members * CHURN / 2)
    remove = ids[::len(ids) // k][:k]
    have = set(ids)
    lo, hi = min(ids), max(ids)
    add, n = [], lo
    while len(add) < k and n < hi:
        if n not in have:
            add.append(n)
        n += 7
    body = json.dumps({"add_members": add, "remove_members": remove}).encode()
    req = urllib.request.Request(url, data=body, method="PATCH",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        r.read()
    return len(add), len(remove)


def run(ctx, members=None):
    members = members or (200_000 if getattr(ctx, "quick", False) else BIG)
    work = os.path.join(ctx.work, "out-changes")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    emu = Emulator(ctx, work, members, 1_000, min(100_000, members // 2), apps=1)
    try:
        emu.log()
        i = emu.take_app()
        first, c1, spent1 = export_run(ctx, emu, work, "first", i)
        snap = c1["output"]
        old = os.path.join(work, "old.parquet")
        shutil.copyfile(snap, old)
        added, removed = churn(emu, app_id(i), members)
        second, c2, spent2 = export_run(ctx, emu, work, "second", i)
    finally:
        emu.stop()
    ch = c2.get("changes") or {}
    change_file = ch.get("key")
    if not change_file:
        raise SystemExit(f"no change file: {json.dumps(c2)[:2000]}")
    peer = ctx.measure([ctx.python, "-c", DUCKDB, old, c2["output"], change_file])
    duck = json.loads(peer.stdout)
    ok = (duck["differ"] == [0, 0] and ch["entered"] == duck["counts"]["entered"] == added
          and ch["exited"] == duck["counts"]["exited"] == removed)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    os.remove(old)
    return f"""## changes: membership change file of a {members:,}-member cohort

Issue 16 part 4. One cohort of {members:,} members with the properties {", ".join(PROPS)},
exported with `output.changes = true` (zstd level 3), then {added:,} members added and
{removed:,} removed through the emulator's admin API ({CHURN:.0%} of the cohort), then
exported again: the second run downloads the new body (one request), writes the snapshot,
and computes the change file from the two Parquet files. The peer: DuckDB `EXCEPT` both
ways on `(amplitude_id, user_id)` of the same two snapshots (its own process).

| run | wall s | peak RSS MiB |
|---|---|---|
| first export (no previous snapshot: no change file) | {first.wall_s:.2f} | {first.rss_mib:.1f} |
| second export, change file included | {second.wall_s:.2f} | {second.rss_mib:.1f} |
| of which the change computation (report `changes.duration_ms`) | {ch["duration_ms"] / 1000:.2f} | — |
| DuckDB `EXCEPT` both ways (counts only) | {duck["wall_s"]:.2f} | {peer.rss_mib:.1f} (whole process, incl. the equality check) |

- Change file: {ch["entered"]:,} entered, {ch["exited"]:,} exited ({ch["entered"] + ch["exited"]:,} rows);
  DuckDB: {duck["counts"]["entered"]:,} entered, {duck["counts"]["exited"]:,} exited; rows
  in one but not the other: {duck["differ"][0]} / {duck["differ"][1]}. Equal: **{"yes" if ok else "NO"}**.
- Requests spent: first run {spent1}, second run {spent2} (the change costs none).
- Peak RSS of the run with the change vs without: {second.rss_mib - first.rss_mib:+.1f} MiB.
"""


if __name__ == "__main__":
    import argparse

    import run as harness

    args = argparse.Namespace(
        bin=os.path.join(ROOT, "target/release/cohort-sync"),
        work=sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bench-work"),
        repeats=1,
        quick=False,
    )
    print(run(harness.Ctx(args, ROOT), int(sys.argv[2]) if len(sys.argv) > 2 else None))
