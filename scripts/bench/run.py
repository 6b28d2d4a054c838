"""Benchmark runner behind `make bench` (scripts/bench.sh).

Discovers the cases `scripts/bench/case_*.py` (each exposes `run(ctx) -> str`, a Markdown
section), runs them in name order and writes BENCHMARKS.md with machine information, each
case's tables and the exact commands.

usage: run.py --bin target/release/cohort-sync [--repeats N] [--cases convert,scaling]
              [--work bench-work] [--out BENCHMARKS.md] [--quick]

What a case gets in `ctx`:
  ctx.bin (alias ctx.binary), ctx.root, ctx.work (alias ctx.work_dir: gitignored cache
  for workloads), ctx.repeats, ctx.quick,
  ctx.python (this interpreter: the bench virtualenv with the peers),
  ctx.measure(cmd, env=None, cwd=None, check=True) -> Run
                                                one child process: wall time and peak RSS
                                                (os.wait4's ru_maxrss), CPU, exit code, output;
                                                raises RuntimeError on a non-zero exit when
                                                check; a Run also unpacks as (wall_s, rss_mib)
  ctx.series(tools, repeats=None) -> {name: [Run]}
                                                runs every tool `repeats` times, rotating the
                                                order each round so no tool always goes first
                                                (Tool(name, cmd, env, before, after): the
                                                hooks run untimed around each run)
  ctx.table(results, reference) -> str          Markdown table: medians, min–max, ratio of the
                                                reference tool to each other one
  ctx.workload(name, generate) -> path          cached file under ctx.work, made by
                                                generate(path) when missing
  ctx.quote(cmd) -> str                         a command as one shell line
"""
import argparse
import datetime
import importlib.util
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    wall_s: float
    rss_mib: float
    user_s: float
    sys_s: float
    rc: int
    stdout: str
    stderr: str

    # Also usable as the pair (wall seconds, peak RSS MiB).
    def __getitem__(self, i):
        return (self.wall_s, self.rss_mib)[i]

    def __iter__(self):
        return iter((self.wall_s, self.rss_mib))


@dataclass
class Tool:
    """One contender of a series: `cmd` is run as is; `before` (optional) runs untimed
    before each run (e.g. removing the previous output; it may also change `cmd` in place,
    e.g. put in a fresh URL); `after` (optional) runs untimed after each run, with its Run."""

    name: str
    cmd: list
    env: dict = None
    before: object = None
    after: object = None
    note: str = ""
    extra: dict = field(default_factory=dict)


# Runs argv[2:], then writes "wall_s maxrss_kib user_s sys_s exit_code" to fd argv[1].
_LAUNCHER = """
import os, sys, time
fd = int(sys.argv[1])
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
os.write(fd, f"{wall} {ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime} {os.waitstatus_to_exitcode(status)}".encode())
"""


class Ctx:
    def __init__(self, args, root):
        self.root = root
        self.bin = os.path.abspath(args.bin)
        self.work = os.path.abspath(args.work)
        self.repeats = args.repeats
        self.quick = args.quick
        self.python = sys.executable
        self.binary = self.bin
        self.work_dir = self.work
        os.makedirs(self.work, exist_ok=True)

    def quote(self, cmd):
        """One shell line, with paths inside the repository made relative to it."""
        prefix = self.root.rstrip("/") + "/"
        return " ".join(shlex.quote(str(c).replace(prefix, "")) for c in cmd)

    def measure(self, cmd, env=None, cwd=None, check=True):
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        # The child is started by a small launcher process, not by this one: Linux carries
        # the parent's memory high-water mark into a child's ru_maxrss (fork copies the
        # resident set, vfork+exec records the parent's peak), so a child spawned from this
        # interpreter — which may have held a workload in memory — would report at least
        # this process's peak RSS. The launcher (~10 MiB) times and reaps the child with
        # wait4 and reports through a pipe. Output goes to files (no pipe can fill up).
        read_fd, write_fd = os.pipe()
        launcher = [sys.executable, "-c", _LAUNCHER, str(write_fd)] + [str(c) for c in cmd]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    launcher,
                    stdout=out,
                    stderr=err,
                    env=full_env,
                    cwd=cwd or self.root,
                    pass_fds=(write_fd,),
                )
            finally:
                os.close(write_fd)
            with os.fdopen(read_fd, "rb") as pipe:
                report = pipe.read()
            proc.wait()
            out.seek(0)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
            if proc.returncode != 0 or not report:
                raise RuntimeError(f"launcher failed for {self.quote(cmd)}: {stderr[-2000:]}")
            wall, maxrss_kib, user_s, sys_s, rc = report.decode().split()
            run = Run(
                wall_s=float(wall),
                rss_mib=int(maxrss_kib) / 1024.0,
                user_s=float(user_s),
                sys_s=float(sys_s),
                rc=int(rc),
                stdout=out.read().decode(errors="replace"),
                stderr=stderr,
            )
        if check and run.rc != 0:
            raise RuntimeError(f"exit {run.rc}: {self.quote(cmd)}\n{run.stderr[-2000:]}")
        return run

    def series(self, tools, repeats=None):
        repeats = repeats or self.repeats
        results = {t.name: [] for t in tools}
        for r in range(repeats):
            order = tools[r % len(tools):] + tools[: r % len(tools)]
            for t in order:
                if t.before:
                    t.before()
                run = self.measure(t.cmd, env=t.env)
                results[t.name].append(run)
                if t.after:
                    t.after(run)
                print(
                    f"  {t.name:<14} {run.wall_s:7.3f} s {run.rss_mib:8.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
        return results

    @staticmethod
    def stats(runs):
        walls = [r.wall_s for r in runs]
        rss = [r.rss_mib for r in runs]
        cpu = [r.user_s + r.sys_s for r in runs]
        return {
            "wall": statistics.median(walls),
            "wall_min": min(walls),
            "wall_max": max(walls),
            "rss": statistics.median(rss),
            "rss_min": min(rss),
            "rss_max": max(rss),
            "cpu": statistics.median(cpu),
        }

    def table(self, results, reference, extra_columns=None):
        """extra_columns: {header: {tool_name: text}}."""
        extra_columns = extra_columns or {}
        ref = self.stats(results[reference])
        head = [
            "tool",
            "wall s (median)",
            "wall min–max",
            "CPU s (median)",
            "peak RSS MiB (median)",
            "RSS min–max",
            f"{reference} time ÷ tool time",
            f"{reference} RSS ÷ tool RSS",
        ] + list(extra_columns)
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, runs in results.items():
            s = self.stats(runs)
            row = [
                f"**{name}**" if name == reference else name,
                f"{s['wall']:.3f}",
                f"{s['wall_min']:.3f}–{s['wall_max']:.3f}",
                f"{s['cpu']:.2f}",
                f"{s['rss']:.0f}",
                f"{s['rss_min']:.0f}–{s['rss_max']:.0f}",
                "—" if name == reference else f"{ref['wall'] / s['wall']:.2f}",
                "—" if name == reference else f"{ref['rss'] / s['rss']:.2f}",
            ] + [extra_columns[h].get(name, "") for h in extra_columns]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def workload(self, name, generate):
        path = os.path.join(self.work, name)
        if not os.path.exists(path):
            tmp = path + ".tmp"
            print(f"generating {name} ...", file=sys.stderr, flush=True)
            generate(tmp)
            os.replace(tmp, path)
        return path


def machine_info(root):
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=root).stdout.strip()
        except OSError:
            return "?"

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "rustc": sh(["rustc", "--version"]),
        "commit": sh(["git", "rev-parse", "--short", "HEAD"]),
        "python": platform.python_version(),
    }


def discover(bench_dir, wanted):
    cases = []
    for fname in sorted(os.listdir(bench_dir)):
        if not (fname.startswith("case_") and fname.endswith(".py")):
            continue
        name = fname[len("case_"):-3]
        if wanted and name not in wanted:
            continue
        spec = importlib.util.spec_from_file_location(f"bench_case_{name}", os.path.join(bench_dir, fname))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "run"):
            raise SystemExit(f"{fname} has no run(ctx)")
        cases.append((name, module))
    return cases


def main():
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(bench_dir))
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(root, "target/release/cohort-sync"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", default="")
    p.add_argument("--work", default=os.path.join(root, "bench-work"))
    p.add_argument("--out", default=os.path.join(root, "BENCHMARKS.md"))
    p.add_argument("--quick", action="store_true", help="smaller workloads, for trying the harness")
    args = p.parse_args()
    wanted = {c for c in args.cases.split(",") if c}
    ctx = Ctx(args, root)
    sys.path.insert(0, bench_dir)
    info = machine_info(root)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    sections = {}
    for name, module in discover(bench_dir, wanted):
        print(f"== case {name}", file=sys.stderr, flush=True)
        load = os.getloadavg()
        when = datetime.datetime.now(datetime.timezone.utc)
        text = module.run(ctx).strip()
        after = os.getloadavg()
        stamp = (
            f"_Measured {when:%Y-%m-%d %H:%M} UTC at commit `{info['commit']}`, {ctx.repeats} repeats"
            + (" (quick mode)" if ctx.quick else "")
            + f"; load average before/after: {load[0]:.2f} / {after[0]:.2f}._"
        )
        # The stamp goes right under the section's heading.
        head, _, rest = text.partition("\n")
        sections[name] = f"{head}\n\n{stamp}\n{rest}"
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.sh → scripts/bench/run.py); do not edit by hand.",
        "Each case runs every tool several times, rotating the order each round; wall time is",
        "measured around the child process and peak RSS is the child's `ru_maxrss` from",
        "`os.wait4`, taken by a small launcher process (so the figure never includes this",
        "harness's own memory; its floor is the launcher's ~9 MiB). Medians are shown with the",
        "min–max range. Absolute times drift between machines and with load: compare tools",
        "within one case. `scripts/bench.sh --cases a,b` re-runs some cases and keeps the other",
        "sections; each section says when and at which commit it was measured.",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, Linux {info['kernel']}",
        f"- {info['rustc']}; Python {info['python']} for the peers (versions pinned in scripts/bench/requirements.txt)",
        f"- binary: `{os.path.relpath(ctx.bin, root)}` built with `cargo build --release`",
        "",
    ]
    # Keep the sections of cases that were not run this time.
    kept = {}
    if wanted and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            kept = read_sections(f.read())
    kept.update(sections)
    order = [name for name, _ in discover(bench_dir, set())]
    names = [n for n in order if n in kept] + [n for n in kept if n not in order]
    body = "\n".join(header) + "\n" + "\n\n".join(
        f"<!-- case:{n} -->\n{kept[n]}\n<!-- /case:{n} -->" for n in names
    ) + "\n"
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(body)
    print(f"wrote {args.out}", file=sys.stderr)


def read_sections(text):
    """The case sections of an earlier BENCHMARKS.md, by case name."""
    sections = {}
    for m in re.finditer(r"<!-- case:(\w+) -->\n(.*?)\n<!-- /case:\1 -->", text, re.S):
        sections[m.group(1)] = m.group(2)
    return sections


if __name__ == "__main__":
    main()
