"""Case `link`: the 2,000,000-member export on a realistic link (issue 17, target 2).

S3 hands one GET stream 50-150 MB/s; on loopback the export is CPU-bound (case `export`).
Here `cohort-sync emulate --presign-mb-per-sec R` paces every presigned download to R MB/s
and, for R = 50 and 100, one rotating series measures:

- `cohort-sync run` exporting the 2M cohort (props) to zstd level 3 Parquet, fresh state
  and output each run (it lists, requests, polls, follows the 302, streams and publishes);
- `curl -o /dev/null` of the same body from a fresh presigned link (requested and polled
  untimed beforehand, as in case `export`): the link's own speed.

Target: cohort-sync at most 1.05x curl at both rates, peak RSS under 64 MiB. Next to it,
CPU seconds per GB of CSV: ours (the whole run) and polars' for the same conversion of the
body on disk (`peers.py polars`, the convert case's peer; its figure includes Python's
start and imports, its own timing of the conversion alone is given too).

Runs under scripts/bench/run.py (`--cases link`).
"""
import os
import shutil

from case_export import BIG, LEVEL, PIPELINE, SMALL, REDIRECT_THRESHOLD, Emulator, app_id

RATES = [50, 100]  # MB/s
TIME_TARGET = 1.05
RSS_TARGET = 64.0
N_TOOLS = 2


def run(ctx):
    from run import Tool

    big = 200_000 if ctx.quick else BIG
    small = 20_000 if ctx.quick else SMALL
    threshold = small // 2 if ctx.quick else REDIRECT_THRESHOLD
    curl = shutil.which("curl")
    if not curl:
        raise SystemExit("case_link needs curl")
    sections, verdicts, cpu_rows, commands = [], [], [], []
    body_bytes = None
    for rate in RATES:
        work = os.path.join(ctx.work, f"out-link-{rate}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        emu = Emulator(
            ctx, work, big, small, threshold, apps=ctx.repeats * N_TOOLS + 2,
            extra_args=("--presign-mb-per-sec", str(rate)),
        )
        try:
            if body_bytes is None:
                body = os.path.join(ctx.work, "link-body.csv")
                ctx.measure([curl, "-sS", "-f", "-o", body, emu.presigned_url("big")])
                body_bytes = os.path.getsize(body)
                polars = polars_cpu(ctx, Tool, body)
                os.remove(body)
            results, ours_cmd, curl_cmd = series(ctx, Tool, emu, work, curl, big, body_bytes)
            commands += [
                f"    {ctx.quote(emu.cmd)} &",
                f"    {ctx.quote(ours_cmd)}",
                f"    {ctx.quote(curl_cmd[:-1])} \"$LOCATION\"",
            ]
        finally:
            emu.stop()
            shutil.rmtree(work, ignore_errors=True)
        st = {name: ctx.stats(runs) for name, runs in results.items()}
        ours, plain = st["cohort-sync run"], st["curl"]
        ratio = ours["wall"] / plain["wall"]
        per_round = [o.wall_s / c.wall_s for o, c in zip(results["cohort-sync run"], results["curl"])]
        gb = body_bytes / 1e9
        sections.append(
            f"| {rate} MB/s | {ours['wall']:.3f} | {ours['wall_min']:.3f}–{ours['wall_max']:.3f} | "
            f"{plain['wall']:.3f} | {plain['wall_min']:.3f}–{plain['wall_max']:.3f} | "
            f"**{ratio:.3f}** ({', '.join(f'{r:.3f}' for r in per_round)}) | "
            f"{body_bytes / 1e6 / plain['wall']:.1f} | {ours['cpu']:.2f} | {ours['cpu'] / gb:.2f} | "
            f"{ours['rss']:.0f} ({ours['rss_min']:.0f}–{ours['rss_max']:.0f}) |"
        )
        verdicts.append((rate, ratio, ours["rss_max"]))
    verdict = lambda ok: "met" if ok else "NOT met"
    gb = body_bytes / 1e9
    lines = [
        f"- Target \"at most {TIME_TARGET}x curl at {r} MB/s\": **{verdict(x <= TIME_TARGET)}** "
        f"(ratio of medians {x:.3f}); peak RSS under {RSS_TARGET:.0f} MiB: "
        f"**{verdict(m < RSS_TARGET)}** (max {m:.0f} MiB)."
        for r, x, m in verdicts
    ]
    return f"""
## link: the {big:,}-member export on a 50 and a 100 MB/s link

Issue 17, target 2. The emulator paces every presigned download to the given bandwidth
(`--presign-mb-per-sec`, one S3 GET stream's 50-150 MB/s); the body is {body_bytes / 1e6:.0f} MB of
quoted CSV with five property columns (the fixture of case `export`). Per rate, one series
of {ctx.repeats} rounds, the two tools rotated: **cohort-sync run** (the whole export: list, request,
poll, 302, stream into zstd level {LEVEL} Parquet, publish) and **curl** of the same body from
a fresh presigned link (requested and polled untimed before, as in case `export`). The
loopback figure (case `export`) stays the CPU-bound limit.

| link | cohort-sync run s (median) | min–max | curl s (median) | min–max | run ÷ curl (per round) | curl MB/s | cohort-sync CPU s | CPU s per GB of CSV | peak RSS MiB (min–max) |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(sections)}

{chr(10).join(lines)}
- CPU per GB of CSV for the same conversion, body on disk: polars {polars['cpu'] / gb:.2f} CPU-s/GB
  ({polars['cpu']:.2f} CPU-s median with Python's start and imports; its own timing of the
  conversion alone {polars['inner']:.3f} s wall); cohort-sync's whole run is in the table.

Commands:

{chr(10).join(commands)}
"""


def series(ctx, Tool, emu, work, curl, big, body_bytes):
    pipeline = os.path.join(work, "export.toml")
    out, state = os.path.join(work, "out"), os.path.join(work, "state")

    def before_ours():
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        i = emu.take_app()
        with open(pipeline, "w") as f:
            f.write(
                PIPELINE.format(
                    base=emu.base, key=f"bench-key-{i}", secret=f"bench-secret-{i}",
                    app=app_id(i), cohort="big", out=out, state=state, level=LEVEL,
                )
            )

    def check_ours(run):
        files = [f for d, _, fs in os.walk(out) for f in fs
                 if f.endswith(".parquet") and "_history" not in d]
        if len(files) != 1:
            raise SystemExit(f"cohort-sync run wrote {files}: {run.stderr[-1500:]}")

    curl_cmd = [curl, "-s", "-o", "/dev/null", "-w", "%{size_download}", "URL"]

    def before_curl():
        curl_cmd[-1] = emu.presigned_url("big")

    def check_curl(run):
        if int(run.stdout.strip() or 0) != body_bytes:
            raise SystemExit(f"curl got {run.stdout!r} bytes, expected {body_bytes}")

    ours_cmd = [ctx.bin, "run", pipeline]
    tools = [
        Tool("cohort-sync run", ours_cmd, before=before_ours, after=check_ours),
        Tool("curl", curl_cmd, before=before_curl, after=check_curl),
    ]
    return ctx.series(tools), ours_cmd, curl_cmd


def polars_cpu(ctx, Tool, body):
    out = body + ".polars.parquet"
    cmd = [ctx.python, os.path.join(ctx.root, "scripts/bench/peers.py"), "polars", body, out, str(LEVEL)]
    tool = Tool("polars", cmd, before=lambda: os.path.exists(out) and os.remove(out))
    runs = ctx.series([tool])["polars"]
    if os.path.exists(out):
        os.remove(out)
    s = ctx.stats(runs)
    inner = sorted(float(r.stdout.strip()) for r in runs)[len(runs) // 2]
    return {"cpu": s["cpu"], "inner": inner}
