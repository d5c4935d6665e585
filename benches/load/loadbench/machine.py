"""What the kernel says about CPU time and memory: of our processes, of other
processes, and of the machine, read from /proc."""

import os
import subprocess
import time

from . import parse
from .procs import die, log


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def all_stats():
    """pid -> parsed /proc/PID/stat of every process now running."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            text = _read("/proc/%s/stat" % d)
            if text:
                out[int(d)] = parse.parse_pid_stat(text)
    return out


def tree(pid):
    """The process and its children (nginx: master and workers)."""
    return [pid] + sorted(p for p, st in all_stats().items() if st["ppid"] == pid)


def ticks(pids):
    """utime+stime, in clock ticks, summed over the given pids."""
    total = 0
    for p in pids:
        text = _read("/proc/%d/stat" % p)
        if text:
            total += parse.parse_pid_stat(text)["ticks"]
    return total


def hwm_kb(pids):
    """Peak RSS (VmHWM), KiB, summed over the given pids."""
    return sum(parse.parse_vmhwm_kb(_read("/proc/%d/status" % p) or "") for p in pids)


def child_ticks(hz):
    """CPU time of our reaped children (the load generators), in ticks."""
    t = os.times()
    return int((t.children_user + t.children_system) * hz)


def cpu_sample():
    """[busy, idle, total, steal] ticks of cpu, cpu0 and cpu1 from /proc/stat."""
    return parse.parse_cpu_sample(_read("/proc/stat"))


def foreign_sample():
    """{(pid, start): ticks} of every process outside this program's tree
    (the proxies, backends and load generators are inside it), kernel threads
    included: what other work used the CPUs between two samples. Read per
    process because the machine-wide /proc/stat counts busy time in whole
    ticks and idle time exactly, so a lightly loaded CPU that wakes often
    (the fixed-rate points) shows busy time no process used."""
    stats = all_stats()
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, st in stats.items():
            if st["ppid"] in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return {(pid, st["start"]): st["ticks"] for pid, st in sorted(stats.items()) if pid not in ours}


def format_foreign(sample):
    """The sample as the audit log shows it: "pid:starttime:ticks ..."."""
    return " ".join("%d:%s:%d" % (pid, start, t) for (pid, start), t in sample.items())


def top_processes():
    out = subprocess.run(["ps", "-eo", "pcpu=,comm=", "--sort=-pcpu"], capture_output=True, text=True).stdout
    return " ".join("%s(%s%%)" % (f[1], f[0]) for f in (line.split(None, 1) for line in out.splitlines()[:3]))


def idle_check(need):
    """Samples /proc/stat over 3 s: (both CPUs >= need % idle, "cpu0 N% idle, cpu1 N% idle")."""
    a = cpu_sample()
    time.sleep(3)
    b = cpu_sample()
    idle = {c: parse.idle_percent(a, b, c) for c in ("cpu0", "cpu1")}
    text = ", ".join("%s %.0f%% idle" % (c, v) for c, v in idle.items())
    return all(v >= need for v in idle.values()), text


def wait_idle(s):
    """Waits until both CPUs are idle (>= BENCH_IDLE_MIN %) over 3 s; gives up
    after BENCH_MAX_WAIT seconds. Returns the seconds waited."""
    waited = 0
    while True:
        ok, text = idle_check(s.idle_min)
        if ok:
            return waited
        if waited >= s.max_wait:
            die("the machine stayed busy for %ds (%s); not publishing skewed numbers" % (s.max_wait, text))
        log("waiting for an idle machine: %s; top: %s " % (text, top_processes()))
        time.sleep(12)
        waited += 15
