"""Parsing what the tools print: wrk, h2load, oha, strace -c, callgrind,
perf report, nginx's stub_status and the kernel's /proc files.

Pure functions of text, so tests/test_parse.py runs them on recorded output.
A figure the text lacks comes back as 0 (counts, req/s) or NaN (latency).
"""

import json
import re

NAN = float("nan")


def ms(value, unit):
    """A wrk duration ("812.00us", "1.20ms", "2s") in milliseconds."""
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _int(m, group=1):
    return int(m.group(group)) if m else 0


def parse_wrk(text):
    """wrk --latency: req/s, p50/p99 ms, requests, socket errors, non-2xx/3xx."""
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % p, text, re.M)
        r["p" + p] = ms(*m.groups()) if m else NAN
    r["req"] = _int(re.search(r"(\d+) requests in", text))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sockerr"] = sum(map(int, m.groups())) if m else 0
    r["non2xx"] = _int(re.search(r"Non-2xx or 3xx responses: (\d+)", text))
    return r


def h2load_latencies(log_text):
    """Request times in microseconds from h2load --log-file (start, status, duration):
    requests that got no status (-1) are left out."""
    lat = []
    for line in log_text.splitlines():
        cols = line.split("\t")
        if len(cols) >= 3 and cols[1] != "-1":
            lat.append(int(cols[2]))
    return sorted(lat)


def percentile_ms(sorted_us, q):
    """The q-quantile (nearest rank below) of sorted microseconds, in ms."""
    if not sorted_us:
        return NAN
    return sorted_us[min(len(sorted_us) - 1, int(q * len(sorted_us)))] / 1000.0


def parse_h2load(text, log_text=""):
    """h2load summary plus its per-request log: req/s, requests done, errors, p50/p99 ms."""
    r = {}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    r["req"] = _int(m, 3)
    r["sockerr"] = (int(m.group(5)) + int(m.group(6)) + int(m.group(7))) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["non2xx"] = (int(m.group(3)) + int(m.group(4))) if m else 0
    lat = h2load_latencies(log_text)
    r["p50"], r["p99"] = percentile_ms(lat, 0.50), percentile_ms(lat, 0.99)
    return r


def parse_h2load_batches(text):
    """Back-to-back h2load runs (points.load_batches) and their "batches:" line:
    requests done over the whole wall time, errors summed over the runs."""
    r = {"rps": 0.0, "p50": NAN, "p99": NAN, "req": 0, "sockerr": 0, "non2xx": 0}
    for m in re.finditer(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout", text):
        r["req"] += int(m.group(3))
        r["sockerr"] += int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    for m in re.finditer(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text):
        r["non2xx"] += int(m.group(3)) + int(m.group(4))
    m = re.search(r"^batches: (\d+) runs in ([\d.]+) s", text, re.M)
    if m and float(m.group(2)) > 0:
        r["rps"] = r["req"] / float(m.group(2))
    return r


def h2load_tls(text):
    """What h2load says it negotiated: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 h2" ("" if nothing)."""
    out = []
    for key in ("TLS Protocol", "Cipher", "Server Temp Key", "Application protocol"):
        m = re.search(r"^%s: (\S+)" % key, text, re.M)
        if m:
            out.append(m.group(1))
    return " ".join(out)


def h2load_ok(text):
    """The 2xx count of h2load's "status codes:" line (0 if absent)."""
    return _int(re.search(r"^status codes: (\d+)", text, re.M))


def parse_oha(text):
    """oha --output-format json: req/s, p50/p99 ms, requests, errors, non-2xx."""
    r = {"rps": 0.0, "p50": NAN, "p99": NAN, "req": 0, "sockerr": 0, "non2xx": 0}
    try:
        j = json.loads(text)
    except ValueError:
        return r
    s = j.get("summary", {})
    r["rps"] = float(s.get("requestsPerSec") or 0.0)
    lp = j.get("latencyPercentiles", {})
    r["p50"] = float(lp.get("p50") or "nan") * 1000.0
    r["p99"] = float(lp.get("p99") or "nan") * 1000.0
    codes = j.get("statusCodeDistribution", {})
    r["req"] = sum(codes.values())
    r["non2xx"] = sum(v for k, v in codes.items() if not k.startswith("2"))
    r["sockerr"] = sum(j.get("errorDistribution", {}).values())
    return r


def parse_pid_stat(text):
    """/proc/PID/stat: ppid, utime+stime (ticks) and start time (ticks after boot).
    The command name may hold spaces and parentheses, so fields count from the last ')'."""
    f = text[text.rindex(")") + 2:].split()
    return {"ppid": int(f[1]), "ticks": int(f[11]) + int(f[12]), "start": f[19]}


def parse_vmhwm_kb(status_text):
    """Peak RSS (VmHWM, KiB) from /proc/PID/status; 0 if absent (kernel threads)."""
    m = re.search(r"^VmHWM:\s+(\d+)", status_text, re.M)
    return int(m.group(1)) if m else 0


def parse_cpu_sample(proc_stat_text):
    """From /proc/stat, for the lines cpu, cpu0 and cpu1: name -> [busy, idle, total, steal] ticks.
    Busy includes irq and softirq time: the kernel charges the softirq work of
    loopback TCP to the process that ran it as well."""
    out = {}
    for line in proc_stat_text.splitlines():
        f = line.split()
        if not f or f[0] not in ("cpu", "cpu0", "cpu1"):
            continue
        v = list(map(int, f[1:]))
        busy = v[0] + v[1] + v[2] + v[5] + v[6]
        idle = v[3] + v[4]
        out[f[0]] = [busy, idle, busy + idle + v[7], v[7]]
    return out


def format_cpu_sample(sample):
    """The sample as the audit log shows it, one "cpuN busy idle total steal" line per CPU."""
    return "\n".join("%s %d %d %d %d" % (name, *v) for name, v in sample.items())


def idle_percent(a, b, cpu):
    """Idle % of one CPU between two samples."""
    return (b[cpu][1] - a[cpu][1]) * 100.0 / max(1, b[cpu][2] - a[cpu][2])


def foreign_ticks(before, after):
    """CPU ticks used between two samples {(pid, start): ticks} of the processes
    outside ours; a process that started in between counts whole."""
    return sum(max(0, t - before.get(k, 0)) for k, t in after.items())


def stub_status_accepts(text):
    """nginx stub_status: the accepted-connections counter (third line, first field)."""
    lines = text.splitlines()
    return int(lines[2].split()[0])


def strace_calls(text):
    """strace -c: syscall -> number of calls (the "total" line left out)."""
    calls = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 5 and re.fullmatch(r"[0-9.]+", f[0]) and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    return calls


def callgrind_totals(dump_text):
    """The instruction count on a callgrind dump's "totals:" line."""
    m = re.search(r"^totals:\s+(\d+)", dump_text, re.M)
    return int(m.group(1)) if m else 0


# callgrind_annotate lines that are the runtime's scaffolding, not cutover's work
_CG_SKIP = re.compile(r"PROGRAM TOTALS|libc-start|below main|block_on|enter_runtime|lang_start|"
                      r"begin_short_backtrace|cutover::main|\?\?\?:")


def callgrind_functions(annotate_text, limit=25):
    """callgrind_annotate --auto=no: [(instructions, function)] of the costliest
    functions (self), with the object file and registry/rustc paths cut."""
    out = []
    for line in annotate_text.splitlines():
        line = re.sub(r" \[[^]]*\]$", "", line)
        line = re.sub(r"/root/.cargo/registry/src/[^/]+/", "", line, count=1)
        line = re.sub(r"/rustc/[0-9a-f]+/", "", line, count=1)
        if not re.match(r"^ *[0-9,]+ \(", line) or _CG_SKIP.search(line):
            continue
        count = int(line.split()[0].replace(",", ""))
        name = re.sub(r"^[^)]*\) +", "", line.strip(), count=1)
        out.append((count, name[:140]))
        if len(out) == limit:
            break
    return out


def perf_top(report_text, limit):
    """perf report --stdio: the first `limit` percentage lines, cut to 150 characters."""
    out = []
    for line in report_text.splitlines():
        if re.match(r"^ +[0-9.]+%", line):
            out.append(re.sub(r" +- +- *$", "", line)[:150])
            if len(out) == limit:
                break
    return out
