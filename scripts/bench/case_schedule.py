"""Case `schedule`: a whole scheduled run (issue 17, target 4).

20 cohorts of mixed sizes (1,000 to 2,000,000 members) exported in one run against the
emulator at time scale S (every Amplitude minute lasts 60·S seconds, jobs take J·S), the
runner told the same scale (`COHORT_SYNC_TIME_SCALE`), 5 cohorts at a time, biggest first.
A first run (untimed) fills the state; each measured round then uses a fresh app (the
emulator's windows are per app) and `--force`, so every run requests all 20, and `plan`
before it predicts the finish from each cohort's time at its last export.

The lower bound Amplitude's limits allow: request k (0-based) cannot be issued before
⌊k/4⌋ minutes (4 a minute; the 60-in-10-minutes window does not bind at 20), and a cohort
then needs its own time — the runner's measured time for it without its waits for limits
(`duration_ms − limit_waits`: request call, job, poll, transfer, write). Assigning the
longest own times to the earliest slots minimises the latest finish; that plus the run's
start-up before its first request is the bound. Target: the run within 5% of it, and
`plan`'s predicted finish (`predicted_finish`, see src/runner/finish.rs) within 5% of the
measured one.

Runs under scripts/bench/run.py (`--cases schedule`).
"""
import json
import os
import shutil

from case_export import Emulator

SCALE = 0.25
JOB_SECONDS = 20  # Amplitude seconds, scaled
SIZES = [2_000_000, 1_000_000, 500_000, 300_000, 200_000, 150_000, 100_000, 50_000, 50_000,
         20_000, 20_000, 10_000, 10_000, 5_000, 5_000, 2_000, 2_000, 1_000, 1_000, 1_000]
QUICK_SIZES = [s // 10 for s in SIZES]
THRESHOLD = 100_000
PER_MINUTE = 4
TARGET = 1.05

PIPELINE = """kind = "export"
name = "bench-schedule"

[connection]
base_url = "{base}"
api_key = "sched-key-{i}"
secret_key = "sched-secret-{i}"
app_id = {app}

[select]
ids = [{ids}]

[output]
url = "{out}"

[quota]
reserve = 0
priority = "listed"
max_parallel = 5

[state]
url = "{state}"
"""


def fixture(apps, sizes):
    lines = [f"time_scale = {SCALE}", f"job_seconds = {JOB_SECONDS}",
             f"redirect_threshold_rows = {THRESHOLD}", "monthly_limit = 500", ""]
    for i in range(apps):
        lines += ["[[apps]]", f"app_id = {800_000 + i}", f'api_key = "sched-key-{i}"',
                  f'secret_key = "sched-secret-{i}"', ""]
        for n, size in enumerate(sizes):
            lines += ["[[apps.cohorts]]", f'id = "s{n:02d}"', f'name = "sched {n} ({size:,})"',
                      f"size = {size}", f"seed = {900 + n}", ""]
    return "\n".join(lines)


def seconds(a, b):
    from datetime import datetime
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(b) - parse(a)).total_seconds()


def p_started(path):
    with open(path) as f:
        return json.load(f)["started_at"]


def run(ctx):
    from run import Tool

    sizes = QUICK_SIZES if ctx.quick else SIZES
    work = os.path.join(ctx.work, "out-schedule")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    apps = ctx.repeats + 2
    emu = Emulator(ctx, work, 0, 0, THRESHOLD, apps, fixture=fixture(apps, sizes), timing=())
    pipeline = os.path.join(work, "schedule.toml")
    report = os.path.join(work, "report.json")
    plan_report = os.path.join(work, "plan.json")
    out, state = os.path.join(work, "out"), os.path.join(work, "state")
    env = {"COHORT_SYNC_TIME_SCALE": str(SCALE)}
    rounds = []

    def use_fresh_app():
        shutil.rmtree(out, ignore_errors=True)
        i = emu.take_app()
        with open(pipeline, "w") as f:
            f.write(PIPELINE.format(base=emu.base, i=i, app=800_000 + i, out=out, state=state,
                                    ids=", ".join(f'"s{n:02d}"' for n in range(len(sizes)))))

    shutil.rmtree(state, ignore_errors=True)
    use_fresh_app()
    ctx.measure([ctx.bin, "run", pipeline], env=env)  # fills the state (untimed)

    def before():
        use_fresh_app()
        ctx.measure([ctx.bin, "plan", pipeline, "--force", "--report", plan_report], env=env)
        with open(plan_report) as f:
            p = json.load(f)["pipelines"][0]
        rounds.append({
            "predicted": seconds(p_started(plan_report), p["predicted_finish"]),
            "issued_by": seconds(p_started(plan_report), p["earliest_finish"]),
            "basis": p.get("predicted_from"),
        })

    def after(run):
        with open(report) as f:
            r = json.load(f)
        (p,) = r["pipelines"]
        if len(p["cohorts"]) != len(sizes) or any(c["outcome"] != "exported" for c in p["cohorts"]):
            raise SystemExit(f"schedule: not every cohort exported: {json.dumps(p)[:1500]}")
        own = sorted(
            (c["duration_ms"] - (c.get("limit_waits") or {}).get("total_ms", 0)) / 1000
            for c in p["cohorts"]
        )[::-1]
        first_request = min(seconds(r["started_at"], q["at"]) for q in p["requests"])
        slots = [(k // PER_MINUTE) * 60 * SCALE for k in range(len(own))]
        bound = first_request + max(s + o for s, o in zip(slots, own))
        rounds[-1].update(measured=seconds(r["started_at"], r["finished_at"]), bound=bound,
                          first_request=first_request, longest=own[0], wall=run.wall_s)

    tool = Tool("cohort-sync run", [ctx.bin, "run", pipeline, "--force", "--report", report], env=env,
                before=before, after=after)
    try:
        ctx.series([tool])
    finally:
        emu.stop()
        shutil.rmtree(out, ignore_errors=True)
    verdict = lambda ok: "met" if ok else "NOT met"
    rows = []
    for n, rd in enumerate(rounds, 1):
        pred = rd["predicted"]
        basis = rd["basis"] or {}
        rows.append(
            f"| {n} | {rd['measured']:.2f} | {rd['bound']:.2f} | **{rd['measured'] / rd['bound']:.3f}** | "
            f"{rd['first_request']:.2f} | {rd['longest']:.2f} | {rd['issued_by']:.2f} | "
            f"{pred:.2f} ({basis.get('known', 0)} of {basis.get('downloads', 0)} known) | "
            f"**{pred / rd['measured']:.3f}** |"
        )
    ratios = sorted(rd["measured"] / rd["bound"] for rd in rounds)
    med = ratios[len(ratios) // 2]
    preds = sorted(rd["predicted"] / rd["measured"] for rd in rounds if rd["predicted"] is not None)
    pmed = preds[len(preds) // 2] if preds else None
    minute = 60 * SCALE
    return f"""
## schedule: a whole run of 20 cohorts under Amplitude's limits

Issue 17, target 4. 20 cohorts ({min(sizes):,} to {max(sizes):,} members, {sum(sizes):,} in all) in
one export run, 5 at a time, biggest first, against the emulator at time scale {SCALE} (an
Amplitude minute lasts {minute:.0f} s, a job {JOB_SECONDS * SCALE:.1f} s), the runner at the same scale.
A fresh app and state each round. The bound: start-up to the first request, then request k
no earlier than ⌊k/4⌋ minutes, each cohort taking its own measured time without limit waits,
longest first (see the case's source). `plan --force` runs right before each round; the
table shows when it says the last request can start (`earliest_finish`) and when it
predicts the run's end (`predicted_finish`: the windows, 5 at a time, each cohort's time at
its last export).

| round | run s | lower bound s | run ÷ bound | start-up s | longest cohort s | last request can start s | predicted finish s | predicted ÷ run |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

- Target "within 5% of the lower bound": **{verdict(med <= TARGET)}** (median ratio {med:.3f}).
- Target "plan's predicted finish within 5% of the measured one": **{verdict(pmed is not None and abs(pmed - 1) <= 0.05)}**
  (median predicted ÷ run {f'{pmed:.3f}' if pmed is not None else '—'}).
"""
