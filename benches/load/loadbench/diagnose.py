"""The modes that measure cutover without comparing timings:
--profile (perf), --syscalls (strace -c) and --callgrind (valgrind)."""

import glob
import os
import shutil
import signal
import subprocess
import time

from . import conf, machine, parse, report
from .lab import http_ok
from .procs import die, log, tail
from .settings import PROXIES

REQUESTS = 20000  # requests per --syscalls and --callgrind measurement


def need(cmd, package):
    if shutil.which(cmd) is None:
        die("%s is missing: apt-get install %s" % (cmd, package))


def keep_file(src, repo, name, what, reader):
    """Copies a data file to target/ for later reading with `reader`."""
    os.makedirs(repo / "target", exist_ok=True)
    dst = repo / "target" / name
    shutil.copy(src, dst)
    log("%s kept: %s (%s ...)" % (what, dst, reader))


def h2load_fixed(proto, port, out):
    """h2load for a fixed number of requests at 50 connections on CPU 1 (HTTP/1.1 or h2c)."""
    url = "http://127.0.0.1:%d/" % port
    mode = ["--h1"] if proto == "h1" else []
    streams = ["-m1"] if proto == "h2" else []
    cmd = ["taskset", "-c", "1", "h2load", *mode, "-t1", "-c50", *streams, "-n%d" % REQUESTS, url]
    with open(out, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    with open(out) as f:
        return f.read()


# ---------------------------------------------------------- profile ---
def profile(s, lab, points):
    """perf record (software clock: this machine's VMs may expose no hardware
    counters) of one proxy under load; prints the hottest functions."""
    need("perf", "linux-perf")
    lab.start_backends()
    lab.start_proxies()
    conns = int(os.environ.get("BENCH_PROFILE_CONNS", 50))
    target = os.environ.get("BENCH_PROFILE_TARGET", "cutover")
    if target not in PROXIES:
        die("BENCH_PROFILE_TARGET must be cutover, nginx or haproxy, not " + target)
    port = s.ports.of(target, s.profile)
    pids = ",".join(map(str, lab.pids_of(target)))
    points.load(s.profile, conns, s.warm, port, lab.path("warm.txt"))
    secs = min(s.dur, 8)
    data = lab.path("perf.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-p", pids,
                             "-o", data, "--", "sleep", str(secs)], stderr=subprocess.DEVNULL)
    out = lab.path("prof.txt")
    points.load(s.profile, conns, secs, port, out)
    perf.wait()
    sample = machine.cpu_sample()
    row = report.point_row(0, target, s.profile, conns, points.result(s.profile, out), proxy_ticks=0,
                           cpu0=sample, cpu1=sample, foreign=0, wall=1, new_upstream=0, rss_kb=0,
                           hz=s.hz, foreign_max=100)
    print(report.show_point(row))
    for title, flags, limit in (("hottest functions (self time)", ["--no-children"], 40),
                                ("inclusive time (children included)", ["--children", "-g", "none"], 60)):
        print("== %s ==" % title)
        r = subprocess.run(["perf", "report", "-i", data, *flags, "--sort", "symbol", "--stdio"],
                           capture_output=True, text=True, errors="replace")
        print("\n".join(parse.perf_top(r.stdout, limit)))
    keep_file(data, s.repo, "%s-perf.data" % target, "perf data", "perf report -i")


# --------------------------------------------------------- syscalls ---
def syscalls(s, lab):
    """System calls per request of each proxy: strace -c -f attached for a
    fixed number of requests (strace slows the proxy, so no timing is taken)."""
    need("strace", "strace")
    lab.start_backends()
    lab.start_proxies()
    print("%-8s %-5s %10s %10s   %s" % ("proxy", "proto", "requests", "calls/req", "top calls per request"))
    for t in PROXIES:
        out = lab.path("strace-%s.txt" % t)
        args = [a for pid in lab.pids_of(t) for a in ("-p", str(pid))]
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, *args], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        ok = parse.h2load_ok(h2load_fixed(s.syscalls, s.ports.of(t, s.syscalls), lab.path("sc-%s.txt" % t)))
        st.send_signal(signal.SIGINT)
        st.wait()
        with open(out) as f:
            print(syscall_line(t, s.syscalls, ok, parse.strace_calls(f.read())))


def syscall_line(target, proto, ok, calls):
    """'cutover  h1         20000       4.10   epoll_wait 1.00  write 1.00 ...': the five most frequent calls."""
    if ok == 0:
        return "%-8s %-5s no successful requests" % (target, proto)
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    tops = "".join("%s %.2f  " % (name, n / ok) for name, n in top)
    return "%-8s %-5s %10d %10.2f   %s" % (target, proto, ok, sum(calls.values()) / ok, tops)


# -------------------------------------------------------- callgrind ---
def callgrind(s, lab):
    """User-space instructions per request of cutover under callgrind,
    counting only the measured requests (zeroed after start-up, dumped after)."""
    need("valgrind", "valgrind")
    need("callgrind_control", "valgrind")
    lab.start_backends()
    dump = lab.path("cg.out.%p")
    vg = lab.procs.start_on(0, "valgrind", ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + dump,
                                      lab.cutover_bin, "run", "--config", lab.path(conf.CUTOVER_TOML), "--workers", "1"])
    wait_answer(s.ports.cut, lab.path("valgrind.out"))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["callgrind_control", "-z", str(vg.pid)], **quiet)
    ok = parse.h2load_ok(h2load_fixed("h1", s.ports.cut, lab.path("cg-load.txt")))
    subprocess.run(["callgrind_control", "-d", str(vg.pid)], **quiet)
    lab.procs.stop(vg, signal.SIGINT, grace=60)
    files = sorted(glob.glob(lab.path("cg.out.*.1")))
    if not files:
        die("callgrind wrote no dump")
    if ok != REQUESTS:
        with open(lab.path("cg-load.txt")) as f:
            die("only %d of %d requests succeeded: %s" % (ok, REQUESTS, f.read()))
    print_callgrind(files[0])
    keep_file(files[0], s.repo, "cutover-callgrind.out", "callgrind data", "callgrind_annotate")


def wait_answer(port, logfile):
    for _ in range(150):
        if http_ok(port):
            return
        time.sleep(0.2)
    if not http_ok(port):
        die("cutover did not start under valgrind: " + tail(logfile))


def print_callgrind(dump):
    with open(dump) as f:
        total = parse.callgrind_totals(f.read())
    print("cutover: %.1f K user-space instructions per request (%d requests, HTTP/1.1, 50 connections)"
          % (total / REQUESTS / 1000, REQUESTS))
    print("== most instructions (self), per request ==")
    r = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", dump],
                       capture_output=True, text=True, errors="replace")
    for count, name in parse.callgrind_functions(r.stdout):
        print("%8.0f  %s" % (count / REQUESTS, name))
