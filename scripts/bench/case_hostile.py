"""Case `hostile`: bodies built to exhaust memory or time, each given to `cohort-sync
convert` (the export's reader: the same code reads every `/file` body and every reverse
source). Each must be refused with the limit it passes — never buffered, never waited
on — with peak RSS under 100 MiB and bounded time. Workloads are generated once into the
bench work folder (deterministic)."""
import gzip
import os

MIB = 2**20
RSS_TARGET_MIB = 100


def endless_line(path, size):
    """`size` bytes of one unquoted field with no line break (no header end)."""
    block = b"a" * MIB
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(block)


def huge_field(path, size):
    """A valid header, then one row whose quoted field is `size` bytes."""
    block = b"x" * MIB
    with open(path, "wb") as f:
        f.write(b'"amplitude_id","user_id"\n"1","')
        for _ in range(size // MIB):
            f.write(block)
        f.write(b'"\n')


def gzip_bomb(path, expanded):
    """~`expanded` bytes of one field behind a valid header, gzip level 9 (≈1,000:1)."""
    block = b"z" * (8 * MIB)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b'"amplitude_id","user_id"\n"1","')
        for _ in range(expanded // len(block)):
            f.write(block)
        f.write(b'"\n')


def wide_header(path, columns):
    """A header of `columns` distinct names and one row."""
    with open(path, "w") as f:
        f.write(",".join(f'"c{i}"' for i in range(columns)) + "\n")
        f.write(",".join(f'"{i}"' for i in range(columns)) + "\n")


def repeated_header(path, copies):
    """`amplitude_id` then `copies` columns all named `p` (renamed p, p_2, p_3, ...)."""
    with open(path, "w") as f:
        f.write('"amplitude_id",' + ",".join('"p"' for _ in range(copies)) + "\n")
        f.write('"1",' + ",".join('"v"' for _ in range(copies)) + "\n")


def long_rows(path, rows, width):
    """A header, then `rows` rows of one `width`-byte field: within the field limit, over
    the row limit from the first row."""
    field = b"y" * (60 * 1024)
    with open(path, "wb") as f:
        f.write(b'"amplitude_id"' + b',"f"' * width + b"\n")
        for i in range(rows):
            f.write(f'"{i + 1}"'.encode() + (b',"' + field + b'"') * width + b"\n")


def cases(ctx):
    big = 64 * MIB if ctx.quick else 1024 * MIB
    return [
        ("endless line, no line break", "endless.csv", lambda p: endless_line(p, big),
         [], "max_header_bytes"),
        ("one 1 GiB quoted field" if not ctx.quick else "one 64 MiB quoted field",
         "field.csv", lambda p: huge_field(p, big), [], "max_field_bytes"),
        ("gzip bomb (one field, ≈1,000:1)", "bomb.csv.gz",
         lambda p: gzip_bomb(p, 2 * big), [], "max_field_bytes"),
        ("gzip bomb, field limit raised to 2 GiB", "bomb.csv.gz",
         lambda p: gzip_bomb(p, 2 * big),
         ["--max-field-bytes", str(4 * big), "--max-row-bytes", str(4 * big)],
         "max_gzip_ratio"),
        ("header of 100,000 distinct names", "wide.csv",
         lambda p: wide_header(p, 100_000), [], "max_columns"),
        ("30,000 copies of one name (column limit raised)", "repeated.csv",
         lambda p: repeated_header(p, 30_000), ["--max-columns", "40000"], None),
        ("rows of 20 fields of 60 KiB (1.2 MB each)", "rows.csv",
         lambda p: long_rows(p, 200, 20), [], "max_row_bytes"),
    ]


def run(ctx):
    out_dir = os.path.join(ctx.work, "out-hostile")
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    worst_rss = 0.0
    default_rss = 0.0
    failures = []
    for label, name, generate, flags, limit in cases(ctx):
        src = ctx.workload(f"hostile-{'q-' if ctx.quick else ''}{name}", generate)
        out = os.path.join(out_dir, "out.parquet")
        if os.path.exists(out):
            os.remove(out)
        cmd = [ctx.bin, "convert", src, out] + flags
        runs = [ctx.measure(cmd, check=False) for _ in range(max(1, min(ctx.repeats, 3)))]
        wall = sorted(r.wall_s for r in runs)[len(runs) // 2]
        rss = max(r.rss_mib for r in runs)
        worst_rss = max(worst_rss, rss)
        if not flags:
            default_rss = max(default_rss, rss)
        first = runs[0]
        message = (first.stderr.strip().splitlines() or [""])[-1]
        if limit is None:
            refused = first.rc == 0
            outcome = "converted" if refused else f"exit {first.rc}"
        else:
            refused = first.rc != 0 and limit in message and not os.path.exists(out)
            outcome = f"exit {first.rc}, names {limit}" if refused else f"exit {first.rc}: {message[:80]}"
        # Raised limits are the user's choice: memory then follows the limit (informative).
        if not flags and (not refused or rss >= RSS_TARGET_MIB):
            failures.append(label)
        elif flags and not refused:
            failures.append(label)
        size = os.path.getsize(src) / MIB
        lines.append(
            f"| {label} | {size:,.1f} | {outcome} | {wall:.3f} | {rss:.0f} |"
        )
    verdict = "met" if not failures else f"NOT met ({', '.join(failures)})"
    table = "\n".join(lines)
    return f"""
## hostile: bodies built to exhaust memory or time

Each file goes through `cohort-sync convert IN OUT` (the export's reader, which also reads
`/file` bodies and reverse sources) with its default limits unless the row says otherwise
(`--max-*` flags, the same settings as `[download.limits]` in a pipeline). A refused body
must name the limit it passed and leave no output. Peak RSS is the child's `ru_maxrss`;
time is the median of the runs.

| body | file MiB | outcome | wall s | peak RSS MiB |
|---|---|---|---|---|
{table}

- Target "with the default limits, every hostile body refused naming its limit, with peak
  RSS under {RSS_TARGET_MIB} MiB and in bounded time": **{verdict}** (highest with defaults
  {default_rss:.0f} MiB).
- Rows with `--max-*` flags raise a limit on purpose: the body is then refused by the next
  limit (the gzip ratio) or converted, and memory follows what the raised limit lets in
  (a field held whole; per-column writer state for 30,000 columns). They show what raising
  a limit costs; they are not held to the target.
- Before the limits (measured in issue 13): an endless line grew to 470 MB RSS in 25 s and
  kept growing; a ~2 MB gzip expanding to one 2 GB field reached 4.4 GB in 30 s; a header
  of 100,000 names 2.5 GB; 30,000 copies of one name took 47.7 s of CPU.
"""
