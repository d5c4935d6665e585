#!/usr/bin/env python3
"""Load benchmark: cutover against nginx and HAProxy (and straight to one
backend), side by side on this machine, reporting ratios.

Method (docs/benchmarks.md says it in full and how to read the table): two
nginx backends and the load generator (wrk for HTTP/1.1, h2load for h2c, oha
at a fixed rate) run on CPU 1; cutover, nginx and HAProxy, one worker each
and configured alike from the templates in benches/load/conf/, sit on CPU 0
and take turns as the proxy under test. Every point (protocol x connections)
is a warm-up and a measured run for all four targets back to back, in an
order rotated each round; CPU per request comes from /proc/PID/stat, peak
RSS from VmHWM. A round starts only on an idle machine, and a group of
points during which other processes used more than BENCH_FOREIGN_MAX % of a
core is measured again. Each round ends with blue/green flips under load.
The table gives medians over rounds and medians of per-round ratios, and is
written to benches/results/<date>-<commit>[-quick].md (+ .points.tsv).

  benches/load/run.py            # full run: 3 rounds, 2 s warm-up + 10 s per point (~28 min)
  benches/load/run.py --quick    # smoke check: 1 round, short runs, fewer points (~3 min)
  benches/load/run.py --tls      # the TLS points instead: over TLS, and handshakes per second (~13 min)
  benches/load/run.py --help     # the other flags and the environment variables
"""

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadbench import conf, diagnose, report, settings, tools  # noqa: E402
from loadbench.lab import Lab  # noqa: E402
from loadbench.points import Points  # noqa: E402
from loadbench.procs import Procs, die, exit_on_signals, log  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent


def check_machine():
    """At least 2048 open files (raised to the hard limit) and 2 CPUs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 2048:
        die("needs at least 2048 open files (ulimit -n)")
    if len(os.sched_getaffinity(0)) < 2:
        die("needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)")


def git(*args):
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def result_name(quick, tls=False):
    """<date>-<commit>[-dirty][-tls][-quick]: BENCH_COMMIT names the commit when the tree is not a git checkout."""
    commit = os.environ.get("BENCH_COMMIT")
    dirty = ""
    if not commit:
        r = git("rev-parse", "--short=12", "HEAD")
        commit = r.stdout.strip() if r.returncode == 0 else "unknown"
        if git("diff", "--quiet", "HEAD", "--").returncode == 1:
            dirty = "-dirty"
    date = time.strftime("%Y-%m-%d", time.gmtime())
    return date, commit + dirty, "%s-%s%s%s%s" % (date, commit, dirty, "-tls" if tls else "", "-quick" if quick else "")


def compare(s, lab, points, tools_):
    """The comparison: every round, then the table and the results files."""
    date, commit, name = result_name(s.quick, s.tls)
    lab.start_backends()
    log("backends up (nginx %s, pinned to CPU 1); proxies on CPU 0: cutover (%s, --workers 1), nginx %s, "
        "HAProxy %s" % (tools_.nginx_version, lab.cutover_bin, tools_.nginx_version, tools_.haproxy_version))
    points.rounds()
    head = report.header(s, tools_, "%s, commit %s" % (date, commit), points.repeats, points.idle_waits)
    text = report.render(head, points.rows, points.flips, s.rate, points.tls_seen if s.tls else None)
    results = REPO / "benches/results"
    results.mkdir(parents=True, exist_ok=True)
    (results / (name + ".md")).write_text(text)
    report.write_tsv(results / (name + ".points.tsv"), [report.tsv_line(r) for r in points.rows])
    print(text, flush=True)
    log("written: %s" % (results / (name + ".md")))


def main(argv):
    s = settings.from_command_line(argv, REPO)
    check_machine()
    exit_on_signals()
    procs = Procs(s.keep)
    try:
        found = tools.Tools(s)
        cutover_bin = tools.build_cutover(s)
        conf.write_configs(procs.work, s.ports, found.nginx_version, cutover_bin, s.tls)
        lab = Lab(s, procs, cutover_bin)
        points = Points(s, lab, found.oha)
        if s.profile:
            diagnose.profile(s, lab, points)
        elif s.syscalls:
            diagnose.syscalls(s, lab)
        elif s.callgrind:
            diagnose.callgrind(s, lab)
        else:
            compare(s, lab, points, found)
    finally:
        procs.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
