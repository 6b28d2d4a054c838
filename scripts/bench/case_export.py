"""Case `export`: a cohort exported end to end through the built-in emulator (issue 6,
case 2) and the memory statement of issue 3.

The case writes a fixture (one cohort of 2,000,000 members and one of 200,000, both with
five property columns, both above the redirect threshold so both go through the 302 to a
presigned link; jobs complete at once; real time scale 1.0), starts
`cohort-sync emulate` on it, and measures in one rotating series:

- `cohort-sync run` on a pipeline exporting the 2M cohort (props) to zstd Parquet in a local
  directory, with a fresh state and output directory each time, so every run lists,
  requests, polls, downloads and writes;
- `curl -o /dev/null` of the same body: before each run (untimed) the case requests the
  cohort itself (props=1), polls request-status until 200 and takes `Location` from /file
  without following it; curl alone is timed;
- `cohort-sync run` exporting the 200k cohort (the memory statement: same peak RSS);
- `cohort-sync convert` of the same body saved to disk (where the time goes: parsing and
  encoding without the network, the emulator or the runner).

Every measured run uses its own app of the fixture: the emulator enforces Amplitude's 4
single-cohort requests per minute per app, and the series makes more than that.

Runs under scripts/bench/run.py (`--cases export`) or alone:
`python scripts/bench/case_export.py [WORK_DIR]` (a minimal harness, 3 repeats).
"""
import base64
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIG, SMALL = 2_000_000, 200_000
PROPS = ["country", "city", "plan", "device", "ltv"]
REDIRECT_THRESHOLD = 100_000
LEVEL = 3
TIME_TARGET = 1.15  # ours ÷ plain download
RSS_TARGET = 100.0  # MiB
FLAT_TARGET = 1.15  # 2M RSS ÷ 200k RSS
N_TOOLS = 7  # measured runs per round, each on its own app
CLK_TCK = os.sysconf("SC_CLK_TCK")

PIPELINE = """kind = "export"
name = "bench-export"

[connection]
base_url = "{base}"
api_key = "{key}"
secret_key = "{secret}"
app_id = {app}

[select]
ids = ["{cohort}"]

[download]
props = true

[output]
url = "{out}"
compression = "zstd"
compression_level = {level}

[quota]
reserve = 0

[state]
url = "{state}"
"""


def fixture_text(apps, big, small, threshold):
    lines = [
        "# Written by scripts/bench/case_export.py: one app per measured run (the emulator",
        "# allows 4 single-cohort requests per minute per app), each with the same two cohorts.",
        "time_scale = 1.0",
        "job_seconds = 0",
        f"redirect_threshold_rows = {threshold}",
        "link_ttl_secs = 60",
        "monthly_limit = 500",
        "",
    ]
    props = ", ".join(f'"{p}"' for p in PROPS)
    for i in range(apps):
        lines += [
            "[[apps]]",
            f"app_id = {app_id(i)}",
            f'api_key = "bench-key-{i}"',
            f'secret_key = "bench-secret-{i}"',
            "",
        ]
        for cid, size, seed in (("big", big, 61), ("small", small, 62)):
            lines += [
                "[[apps.cohorts]]",
                f'id = "{cid}"',
                f'name = "{cid} ({size:,} members, 5 properties)"',
                f"size = {size}",
                f"seed = {seed}",
                f"props = [{props}]",
                "",
            ]
    return "\n".join(lines)


def app_id(i):
    return 700_000 + i


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Emulator:
    """`cohort-sync emulate` on the fixture, with the few API calls the curl side needs."""

    def __init__(self, ctx, work, big, small, threshold, apps, extra_args=(), fixture=None,
                 timing=("--time-scale", "1.0", "--job-seconds", "0")):
        """`fixture`: the fixture's text (default: the two cohorts of this case per app);
        `timing`: the time-scale and job-time flags (empty: the fixture's own)."""
        self.fixture = os.path.join(work, "fixture.toml")
        with open(self.fixture, "w") as f:
            f.write(fixture or fixture_text(apps, big, small, threshold))
        self.apps = apps
        self.next_app = 0
        out_path = os.path.join(work, "emulator.out")
        self.log_path = os.path.join(work, "emulator.log")
        self.cmd = [
            ctx.bin, "emulate", "--port", "0", "--fixture", self.fixture,
            *timing, "--redirect-threshold", str(threshold), *extra_args,
        ]
        with open(out_path, "w") as out, open(self.log_path, "w") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, cwd=ctx.root)
        self.base = None
        for _ in range(300):
            with open(out_path) as f:
                for line in f:
                    if line.startswith("listening on "):
                        self.base = line.split()[2]
            if self.base or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.base:
            self.stop()
            raise SystemExit(f"emulator did not start: {open(self.log_path).read()[-2000:]}")
        self.opener = urllib.request.build_opener(_NoRedirect)
        self.seq = 0

    def take_app(self):
        if self.next_app >= self.apps:
            raise SystemExit("case_export: ran out of fixture apps")
        i = self.next_app
        self.next_app += 1
        return i

    def call(self, i, path):
        """GET `path` as app i; (status, headers, body bytes), redirects not followed."""
        req = urllib.request.Request(self.base + path)
        token = base64.b64encode(f"bench-key-{i}:bench-secret-{i}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def presigned_url(self, cohort):
        """A fresh presigned link to `cohort`'s props=1 file, the way the runner gets it."""
        i = self.take_app()
        status, _, body = self.call(i, f"/api/5/cohorts/request/{cohort}?props=1")
        if status != 202:
            raise SystemExit(f"request {cohort}: HTTP {status}: {body[:500]!r}")
        rid = json.loads(body)["request_id"]
        for _ in range(600):
            status, _, body = self.call(i, f"/api/5/cohorts/request-status/{rid}")
            if status == 200:
                break
            if status != 202:
                raise SystemExit(f"request-status {rid}: HTTP {status}: {body[:500]!r}")
            time.sleep(0.05)
        status, headers, body = self.call(i, f"/api/5/cohorts/request/{rid}/file")
        if status != 302 or not headers.get("Location"):
            raise SystemExit(f"/file of {rid}: expected a 302, got HTTP {status}: {body[:300]!r}")
        return headers["Location"]

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def log(self):
        """Request-log entries since the previous call."""
        with urllib.request.urlopen(f"{self.base}/_emulator/requests?since={self.seq}") as r:
            entries = json.loads(r.read())
        if entries:
            self.seq = entries[-1]["seq"]  # `since` is exclusive
        return entries

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run(ctx):
    from run import Tool

    quick = getattr(ctx, "quick", False)
    big, small = (200_000, 20_000) if quick else (BIG, SMALL)
    threshold = small // 2 if quick else REDIRECT_THRESHOLD
    work = os.path.join(ctx.work, "out-export")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    curl = shutil.which("curl")
    if not curl:
        raise SystemExit("case_export needs curl")
    repeats = ctx.repeats
    emu = Emulator(ctx, work, big, small, threshold, apps=repeats * N_TOOLS + 3)
    try:
        return measure(ctx, Tool, emu, work, curl, big, small, threshold, repeats)
    finally:
        emu.stop()


def measure(ctx, Tool, emu, work, curl, big, small, threshold, repeats):
    emu.log()  # start the log cursor
    # The body once on disk, for the convert comparison (and its size).
    body = os.path.join(work, "body-big.csv")
    subprocess.run([curl, "-sS", "-f", "-o", body, emu.presigned_url("big")], check=True)
    body_bytes = os.path.getsize(body)
    emu.log()

    emu_cpu = {}  # tool name → emulator CPU seconds during each of its runs
    details = {}  # tool name → per-run facts from the report / request log
    cpu_mark = {}

    def mark(name):
        cpu_mark[name] = emu.cpu_s()

    def emu_after(name, extra=None):
        def after(run):
            emu_cpu.setdefault(name, []).append(emu.cpu_s() - cpu_mark[name])
            if extra:
                extra(run)

        return after

    def ours(name, cohort, rows, tag=None, level=LEVEL):
        tag = tag or cohort
        pipeline = os.path.join(work, f"export-{tag}.toml")
        report = os.path.join(work, f"report-{tag}.json")
        out = os.path.join(work, f"out-{tag}")
        state = os.path.join(work, f"state-{tag}")

        def before():
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
            if os.path.exists(report):
                os.remove(report)
            i = emu.take_app()
            with open(pipeline, "w") as f:
                f.write(
                    PIPELINE.format(
                        base=emu.base, key=f"bench-key-{i}", secret=f"bench-secret-{i}",
                        app=app_id(i), cohort=cohort, out=out, state=state, level=level,
                    )
                )
            emu.log()
            mark(name)

        def check(run):
            with open(report) as f:
                rep = json.load(f)
            (p,) = rep["pipelines"]
            (c,) = p["cohorts"]
            if c["outcome"] != "exported" or c["rows"] != rows or p["quota_spent"] != 1:
                raise SystemExit(f"{name}: unexpected report: {json.dumps(p)[:2000]}")
            calls = emu.log()  # the cursor was moved just before this run
            at = lambda pred: [e["at_ms"] for e in calls if pred(e)]
            first = min(e["at_ms"] for e in calls)
            presign = at(lambda e: e["listener"] == "presign")
            details.setdefault(name, []).append(
                {
                    "calls": [f"{e['method']} {e['path'].split('/api/')[-1]} {e['status']}" for e in calls],
                    "status_polls": len(at(lambda e: "request-status" in e["path"])),
                    "preamble_ms": presign[0] - first if presign else None,
                    "cohort_ms": c["duration_ms"],
                    "output": c["output"],
                    "bytes": c["bytes"],
                }
            )

        cmd = [ctx.bin, "run", pipeline, "--report", report]
        return Tool(name, cmd, before=before, after=emu_after(name, check))

    def plain(name, cohort):
        cmd = [curl, "-s", "-o", "/dev/null", "-w", "%{size_download}", "URL"]

        def before():
            cmd[-1] = emu.presigned_url(cohort)  # untimed; the Tool runs this same list
            emu.log()
            mark(name)

        def check(run):
            if int(run.stdout.strip() or 0) != body_bytes:
                raise SystemExit(f"curl got {run.stdout!r} bytes, expected {body_bytes}")
            emu.log()

        return Tool(name, cmd, before=before, after=emu_after(name, check))

    def piped(name, cohort):
        """curl | cohort-sync convert -: our parse + encode on the live body, without the runner."""
        out = os.path.join(work, "piped.parquet")
        script = f"{shlex.quote(curl)} -s \"$1\" | {shlex.quote(ctx.bin)} convert - {shlex.quote(out)} --compression zstd:{LEVEL}"
        cmd = ["bash", "-o", "pipefail", "-c", script, "piped", "URL"]

        def before():
            if os.path.exists(out):
                os.remove(out)
            cmd[-1] = emu.presigned_url(cohort)
            emu.log()
            mark(name)

        return Tool(name, cmd, before=before, after=emu_after(name, lambda run: emu.log()))

    def convert(name, compression):
        out = os.path.join(work, f"convert-{compression.replace(':', '')}.parquet")
        cmd = [ctx.bin, "convert", body, out, "--compression", compression]

        def before():
            if os.path.exists(out):
                os.remove(out)
            mark(name)

        return Tool(name, cmd, before=before, after=emu_after(name))

    OURS, CURL = "cohort-sync run", "curl (plain download)"
    SMALL_RUN = f"cohort-sync run, {small:,}"
    PIPED = "curl piped into convert -"
    CONV, CONV_NONE = "convert (body on disk)", "convert, no compression"
    FAST = "cohort-sync run, zstd level 1"
    tools = [
        ours(OURS, "big", big),
        plain(CURL, "big"),
        ours(SMALL_RUN, "small", small),
        piped(PIPED, "big"),
        convert(CONV, f"zstd:{LEVEL}"),
        convert(CONV_NONE, "none"),
        ours(FAST, "big", big, tag="big-zstd1", level=1),
    ]
    assert len(tools) == N_TOOLS
    results = ctx.series(tools, repeats=repeats)

    # Our 2M output read back with pyarrow.
    out_file = details[OURS][-1]["output"]
    code = (
        "import sys, pyarrow.parquet as pq; f = pq.ParquetFile(sys.argv[1]); "
        "print(f.metadata.num_rows, f.metadata.metadata[b'cohort_sync.rows'].decode(), "
        "f.metadata.num_row_groups, f.metadata.row_group(0).num_rows, ','.join(f.schema_arrow.names))"
    )
    out = ctx.measure([ctx.python, "-c", code, out_file]).stdout.split()
    n, footer, groups, names = out[0], out[1], out[2], out[4]
    group_rows = int(out[3])  # the writer's row-group size, as written
    if int(n) != big or int(footer) != big:
        raise SystemExit(f"{out_file}: {n} rows (footer {footer}), expected {big}")
    profile = perf_profile(ctx, work, tools[4].cmd)
    os.remove(body)  # ~300 MB: not worth keeping between runs
    tools[0].before()  # one more 2M run (own app, fresh state), its RSS sampled over time
    timeline, flat_rss = rss_timeline(tools[0].cmd, ctx.root)
    for name in os.listdir(work):  # outputs (up to ~300 MB each); the text files stay
        path = os.path.join(work, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif name.endswith(".parquet"):
            os.remove(path)

    st = {name: ctx.stats(runs) for name, runs in results.items()}
    s_ours, s_curl, s_small, s_fast = st[OURS], st[CURL], st[SMALL_RUN], st[FAST]
    ratio = s_ours["wall"] / s_curl["wall"]
    # The same ratio within each round (the runs of one round are next to each other).
    round_ratios = [o.wall_s / c.wall_s for o, c in zip(results[OURS], results[CURL])]
    flat = s_ours["rss"] / s_small["rss"]
    fast_size_pct = 100.0 * (details[FAST][-1]["bytes"] / details[OURS][-1]["bytes"] - 1)
    out_mb = details[OURS][-1]["bytes"] / 1e6  # our 2M-row Parquet file
    emu_med = {name: median(v) for name, v in emu_cpu.items()}

    def fmt_med(name, key, unit=""):
        vals = [d[key] for d in details.get(name, []) if d[key] is not None]
        return f"{median(vals):.0f}{unit}" if vals else "—"

    head = [
        "tool", "wall s (median)", "wall min–max", "÷ curl (median wall)", "CPU s (median)",
        "emulator CPU s (median)", "peak RSS MiB (median)", "RSS min–max",
    ]
    rows_md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tools:
        s = st[t.name]
        rows_md.append(
            "| " + " | ".join(
                [
                    f"**{t.name}**" if t.name == OURS else t.name,
                    f"{s['wall']:.3f}",
                    f"{s['wall_min']:.3f}–{s['wall_max']:.3f}",
                    "—" if t.name == CURL else f"{s['wall'] / s_curl['wall']:.2f}",
                    f"{s['cpu']:.2f}",
                    f"{emu_med.get(t.name, 0):.2f}",
                    f"{s['rss']:.0f}",
                    f"{s['rss_min']:.0f}–{s['rss_max']:.0f}",
                ]
            ) + " |"
        )
    table = "\n".join(rows_md)
    mem_table = "\n".join(
        [
            "| cohort | peak RSS MiB (median) | RSS min–max | wall s (median) |",
            "|---|---|---|---|",
            f"| {big:,} members | {s_ours['rss']:.1f} | {s_ours['rss_min']:.1f}–{s_ours['rss_max']:.1f} | {s_ours['wall']:.3f} |",
            f"| {small:,} members | {s_small['rss']:.1f} | {s_small['rss_min']:.1f}–{s_small['rss_max']:.1f} | {s_small['wall']:.3f} |",
        ]
    )
    verdict = lambda ok: "met" if ok else "NOT met"
    polls = sorted({d["status_polls"] for d in details[OURS]})
    calls = details[OURS][-1]["calls"]
    loadavg = os.getloadavg()
    mb = body_bytes / 1e6
    cpu_ours = st[OURS]["cpu"] + emu_med.get(OURS, 0)
    cpu_curl = st[CURL]["cpu"] + emu_med.get(CURL, 0)
    # Throughput the export would need to meet the target, against what one CPU-second does.
    needed = mb / (TIME_TARGET * s_curl["wall"])
    per_cpu = mb / st[CONV]["cpu"]
    zstd_cpu = st[CONV]["cpu"] - st[CONV_NONE]["cpu"]
    cmds = "\n".join(
        [
            f"    {ctx.quote(emu.cmd)} &",
            f"    {ctx.quote(tools[0].cmd)}",
            "    # curl: request, poll, Location (untimed, see above), then timed:",
            f"    {ctx.quote(tools[1].cmd[:-1])} \"$LOCATION\"",
            f"    {ctx.quote(tools[2].cmd)}",
            f"    {ctx.quote(tools[3].cmd[:-1])} \"$LOCATION\"",
            f"    {ctx.quote(tools[4].cmd)}",
            f"    {ctx.quote(tools[5].cmd)}",
            f"    {ctx.quote(tools[6].cmd)}  # the same pipeline with compression_level = 1",
        ]
    )
    with open(os.path.join(work, "export-big.toml")) as f:
        pipeline_text = f.read().replace(work + "/", "")
    rel_work = os.path.relpath(work, ctx.root)
    return f"""
## export end to end: a {big:,}-member cohort with properties through the emulator's 302

Issue 6, case 2, and issue 3's memory statement. `cohort-sync emulate` serves a fixture
(written by the case to `{rel_work}/fixture.toml`) with a {big:,}-member and a
{small:,}-member cohort, both with the five property columns {", ".join(f"`{p}`" for p in PROPS)}
(the emulator's own deterministic values: commas, doubled quotes, newlines, non-ASCII), both
above the redirect threshold ({threshold:,} rows) so both are a 302 to a presigned link; jobs
complete at once (`job_seconds = 0`), real time scale 1.0. The {big:,}-member body is
{mb:.0f} MB of quoted CSV, generated by the emulator as it streams. Every measured run uses
its own app of the fixture (the emulator allows 4 single-cohort requests per minute per
app). {repeats} rounds, tools rotated each round. The emulator runs on the same 2 cores as
the tool being timed; its CPU during each run is shown.

- **cohort-sync run**: the export pipeline below with a fresh state and output directory
  each run, so it lists, reads usage, requests (one quota unit), polls, follows the 302,
  streams the body into zstd level {LEVEL} Parquet and publishes the file, state and manifest.
- **curl (plain download)**: before each run, untimed, the case requests the cohort
  (`props=1`), polls `request-status` until 200 and takes `Location` from `/file` without
  following it; then curl alone downloads the body to `/dev/null`.
- **cohort-sync run, {small:,}**: the same pipeline on the {small:,}-member cohort.
- **curl piped into convert -**: the same kind of fresh link, `curl -s "$LOCATION" |
  cohort-sync convert -`: our parse + encode on the live body without the runner (listing,
  state, manifest, its HTTP client).
- **cohort-sync run, zstd level 1**: the {big:,}-member run with `compression_level = 1`
  (zstd's fastest level; the output is {fast_size_pct:+.0f}% bytes against level {LEVEL}).
- **convert (body on disk)** and **convert, no compression**: `cohort-sync convert` of the
  same body saved to disk: parse + encode without network or emulator, with zstd level
  {LEVEL} and without compression.

Our {big:,}-row output was read back with pyarrow: {n} rows, `cohort_sync.rows` = {footer},
{groups} row groups, columns `{names}`.

{table}

- Target "export at most {TIME_TARGET}× the plain download": **{verdict(ratio <= TIME_TARGET)}**
  — {s_ours['wall']:.3f} s vs {s_curl['wall']:.3f} s, ratio of medians **{ratio:.2f}**
  (per round: {", ".join(f"{r:.2f}" for r in round_ratios)}).
- Target "peak RSS under {RSS_TARGET:.0f} MiB": **{verdict(s_ours['rss_max'] < RSS_TARGET)}**
  (median {s_ours['rss']:.1f} MiB, max {s_ours['rss_max']:.1f} MiB).
- Runner overhead: {fmt_med(OURS, 'preamble_ms', ' ms')} (median) from its first API call to the
  presigned GET as the emulator logged them; status polls per run: {polls} (the first poll
  is made right after the request; with `job_seconds = 0` it already answers 200, so no
  `poll_initial_secs` wait). Calls of one run: {"; ".join(calls)}. Piping the same body
  into `cohort-sync convert -` takes {st[PIPED]['wall']:.3f} s: the runner adds
  {s_ours['wall'] - st[PIPED]['wall']:+.3f} s to the same parse and encode.
- Load average at the end of the case (1/5/15 min): {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}.

### where the time goes

The export is bound by CPU, not by the transfer. Per run, cohort-sync plus the emulator
spend {cpu_ours:.2f} CPU-s ({st[OURS]['cpu']:.2f} + {emu_med.get(OURS, 0):.2f}); the plain download
{cpu_curl:.2f} ({st[CURL]['cpu']:.2f} + {emu_med.get(CURL, 0):.2f}). Parse + encode of the body alone
(`convert`, body on disk) costs {st[CONV]['cpu']:.2f} CPU-s, {per_cpu:.0f} MB per CPU-second;
{zstd_cpu:.2f} of it is zstd (the same convert without compression: {st[CONV_NONE]['cpu']:.2f} CPU-s).
Meeting {TIME_TARGET}× the loopback download means {needed:.0f} MB/s end to end, i.e.
{needed / per_cpu:.1f} cores' worth of our work next to the emulator's, on 2 cores shared with
other jobs.
{profile}
What would close it: on this loopback setup only less CPU per byte — zstd level 1
(measured above: {s_fast['wall']:.3f} s, {s_fast['wall'] / s_curl['wall']:.2f}× the download, {fast_size_pct:+.0f}% output bytes) or
snappy/lz4 for the page compression, spreading the encode over the column threads evenly,
and a cheaper CSV → Arrow step — or more idle cores for the column threads. The target
is set against a loopback transfer of ~{mb / s_curl['wall']:.0f} MB/s; from a link slower than what the
export processes per second (~{mb / st[PIPED]['wall']:.0f} MB/s here, piped), the streaming export keeps pace
with the transfer and the ratio approaches 1.

### memory: {big:,} vs {small:,} members (issue 3)

{mem_table}

- Target "under {RSS_TARGET:.0f} MiB": **{verdict(max(s_ours['rss_max'], s_small['rss_max']) < RSS_TARGET)}**.
- Target "the {big:,}-member export within 15% of the {small:,}-member one": ratio of
  medians **{flat:.2f}**: **{verdict(flat <= FLAT_TARGET)}**.
- RSS of one more {big:,}-member run, sampled every 50 ms: {timeline}
  {"The highest sample came before the last quarter" if flat_rss else "The highest sample came in the last quarter"}.
  RSS rises and falls with each row group ({group_rows:,} rows by default: the Parquet writer
  holds a row group's encoded column chunks, ~{out_mb / int(groups):.0f} MB here, until the group closes). The
  {big:,}-member export writes {groups_text(big, group_rows)}, the {small:,}-member one {groups_text(small, group_rows)}.
- What keeps it flat (src/memory.rs): the Rust heap is jemalloc with one arena (issue 17).
  It keeps freed batch and page buffers in size classes for reuse. glibc either mapped
  and faulted in fresh pages for each buffer (its fixed 256 KiB mmap threshold, used
  until issue 17: flat, but ~57,000 page faults and ~0.2 s of system time per 2,000,000-row
  `convert`), or, with the threshold raised to 4 MiB, fragmented its heap so the peak
  grew with the export's length (ratio 1.17-1.23 in this case). jemalloc's default
  arenas (four per core) measured 67 vs 58 MiB here (1.16). glibc, still used by C code
  (zstd's contexts), keeps the fixed threshold and one arena. The column threads live as
  long as the file, batches are cut at 512 KiB of values, row groups at {group_rows:,} rows,
  and a column's dictionary falls back to plain pages past 256 KiB (src/export/props.rs).
  Before all this, the case measured 88 MiB for {big:,} members and 57 MiB for {small:,}
  (ratio 1.54; run of 2026-11-29 06:13 UTC, commit `24c6415`).

Pipeline (`{rel_work}/export-big.toml`, app and paths per run):

```toml
{pipeline_text.strip()}
```

Commands:

{cmds}
"""


CATEGORIES = [
    ("zstd compression", re.compile(r"^(ZSTD_|HUF_|FSE_|HIST_|POOL_|ZSTDMT)")),
    ("CSV → Arrow (cohort-sync parser, memchr, UTF-8 check)",
     re.compile(r"cohort_sync::export::(records|columns|reader|decode|input|props)|memchr|simdutf8")),
    ("Parquet encoding (levels, dictionaries, hashing)", re.compile(r"parquet::|arrow|ahash|hashbrown")),
    ("memcpy / memset / memcmp", re.compile(r"^__mem")),
    ("SHA-256 of the output", re.compile(r"sha2::")),
]


def perf_profile(ctx, work, cmd, label="convert (body on disk)"):
    """`perf record` of one convert run: CPU share per kind of work, per thread name and
    of the busiest thread, as a Markdown paragraph; empty when perf is missing or not
    allowed."""
    perf = shutil.which("perf")
    if not perf:
        return ""
    data = os.path.join(work, "perf.data")
    out = cmd[3]
    if os.path.exists(out):
        os.remove(out)
    rec = subprocess.run([perf, "record", "-q", "-F", "999", "-o", data, "--"] + cmd, capture_output=True, text=True)
    if rec.returncode != 0:
        return ""

    def report(sort):
        r = subprocess.run(
            [perf, "report", "-i", data, "--no-children", "--sort", sort, "--stdio"],
            capture_output=True, text=True,
        )
        rows = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "%" not in line.split()[0]:
                continue
            pct, rest = line.split(None, 1)
            rows.append((float(pct.rstrip("%")), rest))
        return rows

    shares = {name: 0.0 for name, _ in CATEGORIES}
    kernel = other = 0.0
    for pct, rest in report("symbol"):
        kind, _, sym = rest.partition(" ")
        sym = sym.strip()
        if kind == "[k]":
            kernel += pct
            continue
        for name, pattern in CATEGORIES:
            if pattern.search(sym):
                shares[name] += pct
                break
        else:
            other += pct
    threads = report("pid")
    names = report("comm")
    os.remove(data)
    if not threads:
        return ""
    parts = [f"{name} {pct:.0f}%" for name, pct in shares.items()]
    parts += [f"kernel {kernel:.0f}%", f"other {other:.0f}%"]
    top = max(p for p, _ in threads)
    by_name = ", ".join(f"{name} {pct:.0f}%" for pct, name in names if pct >= 1)
    return (
        f"\nProfile of one `{label}` run (`perf record -F 999`, share of CPU "
        f"samples): {'; '.join(parts)}. By thread name: {by_name}. The busiest of the "
        f"{len(threads)} threads sampled has {top:.0f}% of the samples, so even on idle "
        f"cores this work spreads over at most {100 / top:.1f} cores.\n"
    )


def rss_timeline(cmd, cwd):
    """Runs `cmd`, sampling its VmRSS every 50 ms; a sentence on the samples."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        samples.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.05)
    if proc.returncode != 0 or len(samples) < 8:
        return f"(sampling failed: exit {proc.returncode}, {len(samples)} samples).", False
    q = len(samples) // 4
    quarters = [samples[i * q:(i + 1) * q] for i in range(3)] + [samples[3 * q:]]
    text = (
        f"{len(samples)} samples, median {median(samples):.0f} MiB; highest in each quarter "
        f"of the run {' / '.join(f'{max(x):.0f}' for x in quarters)} MiB, lowest after the "
        f"first quarter {min(min(x) for x in quarters[1:]):.0f} MiB."
    )
    return text, max(quarters[3]) < max(samples)


def groups_text(rows, group_rows):
    n = -(-rows // group_rows)
    if n == 1:
        return "one row group" + ("" if rows == group_rows else f" of {rows:,} rows")
    return f"{n} row groups" + ("" if rows % group_rows == 0 else ", the last one partial")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import argparse

    import run as harness

    args = argparse.Namespace(
        bin=os.path.join(ROOT, "target/release/cohort-sync"),
        work=sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bench-work"),
        repeats=3,
        quick=False,
    )
    print(run(harness.Ctx(args, ROOT)))
