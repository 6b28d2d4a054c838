"""Benchmark case: the reverse pipeline's diff.

Plans a 2,000,000-row CRM CSV against a 2,000,000-member cohort file (Amplitude's quoted
`"amplitude_id","user_id"` download format) and writes both lists (ids to add, ids to
remove), compared in the same run with DuckDB computing both EXCEPTs from the same files
and writing them too.

Used by scripts/bench/run.py (`run(ctx) -> str`, a Markdown section), or on its own:
`python scripts/bench/case_diff.py [WORK_DIR]`.
"""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = 2_000_000
CHANGED = 100_000  # ids only in the CRM list, and as many only in the cohort

DUCKDB_SCRIPT = """
import sys, duckdb
src, base, out = sys.argv[1:4]
con = duckdb.connect()
con.execute("SET threads TO 2")
s = f"SELECT user_id FROM read_csv('{src}', header=true, all_varchar=true)"
b = f"SELECT user_id FROM read_csv('{base}', header=true, all_varchar=true)"
con.execute(f"COPY ({s} EXCEPT {b}) TO '{out}/add.csv' (HEADER false)")
con.execute(f"COPY ({b} EXCEPT {s}) TO '{out}/remove.csv' (HEADER false)")
"""


def make_files(work: Path):
    """CRM list (user_id,email,plan,created_at; unquoted) and cohort download (quoted)."""
    src = work / "crm.csv"
    base = work / "cohort.csv"
    if src.exists() and base.exists():
        return src, base
    rng = random.Random(2024)
    ids = rng.sample(range(10_000_000, 99_999_999), ROWS + CHANGED)
    crm_ids = ids[:ROWS]
    cohort_ids = ids[CHANGED:]
    plans = ["free", "pro", "team", "enterprise"]
    with open(src, "w") as f:
        f.write("user_id,email,plan,created_at\n")
        for n in crm_ids:
            f.write(f"user_{n},u{n}@example.com,{plans[n % 4]},2024-0{1 + n % 9}-1{n % 10}\n")
    with open(base, "w") as f:
        f.write('"amplitude_id","user_id"\n')
        for n in cohort_ids:
            f.write(f'"{n * 7 + 1000000}","user_{n}"\n')
    return src, base


def _measure(cmd, env=None):
    """(wall seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    out, err = p.stdout.read(), p.stderr.read()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {err.decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024.0


def _bench_binary(ctx):
    """The diff_bench example next to the cohort-sync binary, built if missing."""
    binary = Path(getattr(ctx, "binary", ROOT / "target/release/cohort-sync"))
    exe = binary.parent / "examples" / "diff_bench"
    if not exe.exists():
        subprocess.run(
            ["cargo", "build", "--release", "--example", "diff_bench"], cwd=ROOT, check=True
        )
    return exe


def _python(ctx):
    venv = ROOT / ".venv/bin/python"
    return str(getattr(ctx, "python", venv if venv.exists() else sys.executable))


def _best(measure, cmd, repeats):
    runs = [measure(cmd) for _ in range(repeats)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def _lines(path: Path):
    with open(path) as f:
        return sorted(line.strip().strip('"') for line in f if line.strip())


def run(ctx) -> str:
    work = Path(ctx.work_dir) / "diff"
    work.mkdir(parents=True, exist_ok=True)
    src, base = make_files(work)
    measure = getattr(ctx, "measure", _measure)
    repeats = max(1, int(getattr(ctx, "repeats", 3)))
    ours_out, duck_out = work / "ours", work / "duckdb"
    ours_out.mkdir(exist_ok=True)
    duck_out.mkdir(exist_ok=True)
    script = work / "duckdb_diff.py"
    script.write_text(DUCKDB_SCRIPT)

    ours_cmd = [str(_bench_binary(ctx)), str(src), str(base), "--out", str(ours_out)]
    duck_cmd = [_python(ctx), str(script), str(src), str(base), str(duck_out)]
    ours = _best(measure, ours_cmd, repeats)
    duck = _best(measure, duck_cmd, repeats)

    # Both must have found the same lists.
    for name in ("add", "remove"):
        a = _lines(ours_out / f"{name}.txt")
        b = _lines(duck_out / f"{name}.csv")
        if a != b:
            raise RuntimeError(f"{name} lists differ: ours {len(a)}, DuckDB {len(b)}")
        if len(a) != CHANGED:
            raise RuntimeError(f"{name}: expected {CHANGED} ids, got {len(a)}")

    mib = lambda p: p.stat().st_size / 2**20
    rows = [
        ("cohort-sync diff (`examples/diff_bench`)", ours),
        ("DuckDB 2.0 `EXCEPT` both ways (Python, 2 threads)", duck),
    ]
    lines = [
        "## Reverse diff: 2,000,000-row CRM list vs 2,000,000-member cohort",
        "",
        f"CRM CSV {mib(src):.0f} MiB (4 columns, unquoted), cohort CSV {mib(base):.0f} MiB "
        f"(Amplitude's quoted download format); {CHANGED:,} ids to add and {CHANGED:,} to "
        "remove. Both tools read both files and write both lists; both lists are checked to "
        f"be identical. Best wall time of {repeats}, peak RSS.",
        "",
        "| tool | wall s | peak RSS MiB |",
        "|---|---|---|",
    ]
    for name, (wall, rss) in rows:
        lines.append(f"| {name} | {wall:.2f} | {rss:.0f} |")
    lines += [
        "",
        f"Ratios vs DuckDB: {duck[0] / ours[0]:.1f}x faster, {ours[1] / duck[1]:.2f}x the memory.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":

    class Ctx:
        work_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/bench")
        repeats = 3

    print(run(Ctx()))
