"""Case `scaling`: the convert case at 200k, 2M and 10M rows (cohort-sync alone): time
should grow linearly with the rows, peak memory should stay flat."""
import os

import gen
from run import Tool

SIZES = [200_000, 2_000_000, 10_000_000]
# Workloads above this size are deleted after use (disk is shared; regenerating the
# 10M-row file takes about half a minute).
KEEP_BYTES = 500_000_000
QUICK_SIZES = [20_000, 200_000]


def run(ctx):
    sizes = QUICK_SIZES if ctx.quick else SIZES
    out_dir = os.path.join(ctx.work, "out-scaling")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "scaling.parquet")
    rows_md = [
        "| rows | input MB | wall s (median) | wall min–max | s per million rows | peak RSS MiB (median) | RSS min–max |",
        "|---|---|---|---|---|---|---|",
    ]
    per_million = []
    rss = []
    commands = []
    repeats = max(3, ctx.repeats // 2)
    for n in sizes:
        src = ctx.workload(f"convert-{n}.csv", lambda p, n=n: gen.main(n, p))
        cmd = [ctx.bin, "convert", src, out, "--compression", "zstd:3"]
        commands.append(f"    {ctx.quote(cmd)}")
        tool = Tool(
            f"{n:,} rows", cmd, before=lambda: os.path.exists(out) and os.remove(out)
        )
        s = ctx.stats(ctx.series([tool], repeats=repeats)[tool.name])
        pm = s["wall"] / (n / 1e6)
        per_million.append(pm)
        rss.append(s["rss"])
        size = os.path.getsize(src)
        if size > KEEP_BYTES:
            os.remove(src)
        rows_md.append(
            f"| {n:,} | {size / 1e6:.0f} | {s['wall']:.3f} | "
            f"{s['wall_min']:.3f}–{s['wall_max']:.3f} | {pm:.3f} | {s['rss']:.0f} | "
            f"{s['rss_min']:.0f}–{s['rss_max']:.0f} |"
        )
    table = "\n".join(rows_md)
    spread = max(per_million[1:]) / min(per_million[1:]) if len(per_million) > 2 else 1.0
    return f"""
## scaling: the convert case at {", ".join(f"{n:,}" for n in sizes)} rows

cohort-sync alone, {repeats} runs per size. Linear time means a constant "s per million
rows" (the smallest size carries the fixed start-up cost); flat memory means the same peak
RSS whatever the size.

{table}

- Time per million rows, largest vs middle size: {per_million[-1]:.3f} vs {per_million[-2]:.3f} s
  (ratio {spread:.2f}).
- Peak RSS from the smallest to the largest input: {rss[0]:.0f} → {rss[-1]:.0f} MiB.

Commands:

{chr(10).join(commands)}
"""
