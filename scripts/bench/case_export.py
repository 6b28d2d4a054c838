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

    def __init__(self, ctx, work, big, small, threshold, apps):
        self.fixture = os.path.join(work, "fixture.toml")
        with open(self.fixture, "w") as f:
            f.write(fixture_text(apps, big, small, threshold))
        self.apps = apps
        self.next_app = 0
        out_path = os.path.join(work, "emulator.out")
        self.log_path = os.path.join(work, "emulator.log")
        self.cmd = [
            ctx.bin, "emulate", "--port", "0", "--fixture", self.fixture,
            "--time-scale", "1.0", "--job-seconds", "0",
            "--redirect-threshold", str(threshold),
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
    n_tools = 4
    emu = Emulator(ctx, work, big, small, threshold, apps=repeats * n_tools + 2)
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

    def ours(name, cohort, rows):
        tag = cohort
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
                        app=app_id(i), cohort=cohort, out=out, state=state, level=LEVEL,
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

    conv_out = os.path.join(work, "convert.parquet")
    conv = Tool(
        "convert (body on disk)",
        [ctx.bin, "convert", body, conv_out, "--compression", f"zstd:{LEVEL}"],
        before=lambda: (os.path.exists(conv_out) and os.remove(conv_out), mark("convert (body on disk)")),
        after=emu_after("convert (body on disk)"),
    )
    OURS, CURL, SMALL_RUN = "cohort-sync run", "curl (plain download)", f"cohort-sync run {small // 1000}k"
    tools = [
        ours(OURS, "big", big),
        plain(CURL, "big"),
        ours(SMALL_RUN, "small", small),
        conv,
    ]
    results = ctx.series(tools, repeats=repeats)

    # Our 2M output read back with pyarrow.
    out_file = details[OURS][-1]["output"]
    code = (
        "import sys, pyarrow.parquet as pq; f = pq.ParquetFile(sys.argv[1]); "
        "print(f.metadata.num_rows, f.metadata.metadata[b'cohort_sync.rows'].decode(), "
        "f.metadata.num_row_groups, ','.join(f.schema_arrow.names))"
    )
    n, footer, groups, names = ctx.measure([ctx.python, "-c", code, out_file]).stdout.split()
    if int(n) != big or int(footer) != big:
        raise SystemExit(f"{out_file}: {n} rows (footer {footer}), expected {big}")

    st = {name: ctx.stats(runs) for name, runs in results.items()}
    s_ours, s_curl, s_small, s_conv = st[OURS], st[CURL], st[SMALL_RUN], st[conv.name]
    ratio = s_ours["wall"] / s_curl["wall"]
    # The same ratio within each round (the runs of one round are next to each other).
    round_ratios = [o.wall_s / c.wall_s for o, c in zip(results[OURS], results[CURL])]
    flat = s_ours["rss"] / s_small["rss"]

    def fmt_med(name, key, unit=""):
        xs = details.get(name, [])
        vals = [d[key] for d in xs if d[key] is not None]
        return f"{median(vals):.0f}{unit}" if vals else "—"

    emu_col = {name: f"{median(v):.2f}" for name, v in emu_cpu.items()}
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
                    emu_col.get(t.name, ""),
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
    d_ours = details[OURS]
    polls = sorted({d["status_polls"] for d in d_ours})
    calls = d_ours[-1]["calls"]
    loadavg = os.getloadavg()
    cmds = "\n".join(
        [
            f"    {ctx.quote(emu.cmd)} &",
            f"    {ctx.quote(tools[0].cmd)}",
            "    # curl: request, poll, Location (untimed, see above), then timed:",
            f"    {ctx.quote(tools[1].cmd[:-1])} \"$LOCATION\"",
            f"    {ctx.quote(tools[2].cmd)}",
            f"    {ctx.quote(conv.cmd)}",
        ]
    )
    with open(os.path.join(work, "export-big.toml")) as f:
        pipeline_text = f.read()
    ctx_work = os.path.relpath(work, ctx.root)
    pipeline_text = pipeline_text.replace(work + "/", "")
    return f"""
## export end to end: a {big:,}-member cohort with properties through the emulator's 302

Issue 6, case 2, and issue 3's memory statement. `cohort-sync emulate` serves a fixture
(written by the case to `{ctx_work}/fixture.toml`) with a {big:,}-member and a
{small:,}-member cohort, both with the five property columns {", ".join(f"`{p}`" for p in PROPS)}
(the emulator's own deterministic values: commas, doubled quotes, newlines, non-ASCII), both
above the redirect threshold ({threshold:,} rows) so both are a 302 to a presigned link; jobs
complete at once (`job_seconds = 0`), real time scale 1.0. The {big:,}-member body is
{body_bytes / 1e6:.0f} MB of quoted CSV, generated by the emulator as it streams.
Every measured run uses its own app of the fixture (the emulator allows 4 single-cohort
requests per minute per app). {repeats} rounds, tools rotated each round; the emulator runs
on the same 2 cores as the tool being timed and its CPU during each run is shown.

- **cohort-sync run**: the export pipeline below with a fresh state and output directory
  each run, so it lists, reads usage, requests (one quota unit), polls, follows the 302,
  streams the body into zstd level {LEVEL} Parquet and publishes the file, state and manifest.
- **curl (plain download)**: before each run, untimed, the case requests the cohort
  (`props=1`), polls `request-status` until 200 and takes `Location` from `/file` without
  following it; then curl alone downloads the body to `/dev/null`.
- **cohort-sync run {small // 1000}k**: the same pipeline on the {small:,}-member cohort.
- **convert (body on disk)**: `cohort-sync convert` of the same {big:,}-member body saved
  to disk: the parse + encode work without network, emulator or runner.

Our {big:,}-row output was read back with pyarrow: {n} rows, `cohort_sync.rows` = {footer},
{groups} row groups, columns `{names}`.

{table}

- Target "export at most {TIME_TARGET}× the plain download": **{verdict(ratio <= TIME_TARGET)}**
  — {s_ours['wall']:.3f} s vs {s_curl['wall']:.3f} s, ratio of medians **{ratio:.2f}**
  (per round: {", ".join(f"{r:.2f}" for r in round_ratios)}).
- Target "peak RSS under {RSS_TARGET:.0f} MiB": **{verdict(s_ours['rss_max'] < RSS_TARGET)}**
  (median {s_ours['rss']:.1f} MiB, max {s_ours['rss_max']:.1f} MiB).
- Runner overhead seen by the emulator (median over the runs): {fmt_med(OURS, 'preamble_ms', ' ms')}
  from its first API call to the presigned GET; status polls per run: {polls} (the first poll
  is made right after the request; with `job_seconds = 0` it already answers 200, so no
  `poll_initial_secs` wait). Calls of one run: {"; ".join(calls)}.
  The runner's own per-cohort duration (lease → state saved): {fmt_med(OURS, 'cohort_ms', ' ms')}.
- Load average while the case ran (1/5/15 min, at its end): {loadavg[0]:.2f} {loadavg[1]:.2f} {loadavg[2]:.2f}.

### memory: {big:,} vs {small:,} members (issue 3)

{mem_table}

- Target "under {RSS_TARGET:.0f} MiB": **{verdict(max(s_ours['rss_max'], s_small['rss_max']) < RSS_TARGET)}**.
- Target "the {big:,}-member export within 15% of the {small:,}-member one": ratio of
  medians **{flat:.2f}**: **{verdict(flat <= FLAT_TARGET)}**.

Pipeline (`{ctx_work}/export-big.toml`, app and paths per run):

```toml
{pipeline_text.strip()}
```

Commands:

{cmds}
"""


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
