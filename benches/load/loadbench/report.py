"""Point rows, the table and the results files.

A point row is a dict of the COLS below, as strings, exactly as a line of
<result>.points.tsv holds them. The table shows, per point and metric, the
median over rounds of each target's value and, for each ratio, the median of
the per-round ratios (absolute numbers on shared machines drift by 20%;
ratios within a round do not).
"""

import math
import os
import platform
import statistics

from .settings import PROXIES, TARGETS

COLS = ["round", "target", "proto", "conns", "rps", "p50", "p99", "req", "errors",
        "cpu_us_req", "new_upstream", "rss_kb", "foreign_pct", "steal_pct", "state"]

# (column, name in the table)
METRICS = [("rps", "req/s"), ("p50", "p50 ms"), ("p99", "p99 ms"), ("cpu_us_req", "CPU µs/req")]


# ------------------------------------------------------------- rows ---
def point_row(rnd, target, proto, conns, r, proxy_ticks, cpu0, cpu1, foreign, wall, new_upstream,
              rss_kb, hz, foreign_max):
    """A point's row from the load generator's result r (parse.parse_*) and the
    counters around the run: CPU per request of the proxy, foreign CPU as a %
    of one core over the wall time, steal as a % of one CPU's ticks."""
    total = (cpu1["cpu"][2] - cpu0["cpu"][2]) / 2.0  # ticks of one CPU
    steal = cpu1["cpu"][3] - cpu0["cpu"][3]
    foreign_pct = foreign * 100.0 / max(1.0, wall * hz)
    cpu_us = proxy_ticks * 1e6 / hz / r["req"] if r["req"] and target != "direct" else float("nan")
    values = [rnd, target, proto, conns, "%.1f" % r["rps"], "%.3f" % r["p50"], "%.3f" % r["p99"],
              r["req"], r["sockerr"] + r["non2xx"], "%.2f" % cpu_us, new_upstream, rss_kb,
              "%.1f" % foreign_pct, "%.1f" % (steal * 100.0 / max(1.0, total)),
              "dirty" if foreign_pct > foreign_max else "clean"]
    return dict(zip(COLS, map(str, values)))


def flip_row(rnd, target, r, flips, fails, wrong):
    """round, target, requests, non-2xx, socket errors, flips, failed flip calls, requests that missed the pool."""
    return [str(x) for x in (rnd, target, r["req"], r["non2xx"], r["sockerr"], flips, fails, wrong)]


def tsv_line(row):
    return "\t".join(row[c] for c in COLS)


def read_points(path):
    with open(path) as f:
        return [dict(zip(COLS, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def read_flips(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def write_tsv(path, lines):
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


def show_point(row):
    return ("  r{round} {target:8} {proto} c={conns:<4} {rps:>10} req/s  p50 {p50} ms  p99 {p99} ms  "
            "cpu {cpu_us_req} us/req  errors {errors}  new upstream conns {new_upstream}  "
            "foreign cpu {foreign_pct}%  {state}".format(**row))


# ---------------------------------------------------------- figures ---
def med(xs):
    """Median of the numbers that are not NaN; NaN if none."""
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, nd=2):
    if math.isnan(x):
        return "n/a"
    if abs(x) >= 1000:
        return "%.0f" % x
    return "%.*f" % (nd, x)


def rounds_of(rows):
    return sorted({r["round"] for r in rows})


def index(rows):
    """(round, target, proto, conns) -> row."""
    return {(r["round"], r["target"], r["proto"], int(r["conns"])): r for r in rows}


def point_keys(rows):
    """(proto, conns) in the order the run measured them."""
    keys = []
    for r in rows:
        k = (r["proto"], int(r["conns"]))
        if k not in keys:
            keys.append(k)
    return keys


def per_round_ratios(val, rounds, proto, c, metric, other):
    """cutover's value over the other target's, round by round (where both exist and the other's is > 0)."""
    out = []
    for rd in rounds:
        a, b = val.get((rd, "cutover", proto, c)), val.get((rd, other, proto, c))
        if a and b and float(b[metric]) > 0:
            out.append(float(a[metric]) / float(b[metric]))
    return out


HANDSHAKES = ("hs-resume", "hs-ec", "hs-rsa")


def label(proto, c, rate):
    names = {"h1": "HTTP/1.1", "h2": "h2c", "rate": "fixed %d/s" % rate, "tls-h1": "HTTP/1.1 over TLS",
             "tls-h2": "h2 over TLS", "hs-resume": "resumed handshakes", "hs-ec": "full handshakes ECDSA",
             "hs-rsa": "full handshakes RSA"}
    return names[proto] + " c=%d" % c


# ------------------------------------------------------------ table ---
class Table:
    """The table's lines, and the per-round cutover/nginx ratios behind the verdicts."""

    def __init__(self, rows, flips, rate):
        self.rows, self.flips, self.rate = rows, flips, rate
        self.rounds = rounds_of(rows)
        self.val = index(rows)
        self.nginx_rounds = {}  # (proto, c, metric) -> [cutover/nginx per round]
        self.lines = ["| test | metric | cutover | nginx | HAProxy | direct | cutover/nginx | cutover/HAProxy "
                      "| cutover/direct |", "|" + "---|" * 9]
        for proto, c in point_keys(rows):
            for metric, name in METRICS:
                if proto == "rate" and metric == "cpu_us_req":
                    continue
                if proto in HANDSHAKES:
                    # One request per handshake: per request is per handshake;
                    # h2load's batches give no per-request latency.
                    if metric.startswith("p"):
                        continue
                    name = {"rps": "handshakes/s", "cpu_us_req": "CPU µs/handshake"}[metric]
                self.lines.append(self.metric_line(proto, c, metric, name))
            if proto in HANDSHAKES:
                self.lines.append(self.busy_line(proto, c))
        self.lines.append(self.rss_line())
        self.lines += self.flip_lines()

    def verdict(self, proto, c, metric):
        """The median cutover/nginx ratio, or None if that point was not measured."""
        per = self.nginx_rounds.get((proto, c, metric))
        return None if per is None else med(per)

    def metric_line(self, proto, c, metric, name):
        absval = [med([float(self.val[(rd, t, proto, c)][metric]) for rd in self.rounds
                       if (rd, t, proto, c) in self.val]) for t in TARGETS]
        ratios = {t: per_round_ratios(self.val, self.rounds, proto, c, metric, t) for t in TARGETS[1:]}
        self.nginx_rounds[(proto, c, metric)] = ratios["nginx"]
        nd = 3 if metric.startswith("p") else 2
        cells = [fmt(v, nd) for v in absval] + [fmt(med(ratios[t])) for t in TARGETS[1:]]
        return "| %s | %s | %s |" % (label(proto, c, self.rate), name, " | ".join(cells))

    def busy_line(self, proto, c):
        """How busy the proxy was (handshakes/s x CPU per handshake, % of its
        one core): well under 100% means the load generator, not the proxy,
        set the rate, and CPU per handshake is the figure to compare."""
        busy = [med([float(self.val[(rd, t, proto, c)]["rps"]) * float(self.val[(rd, t, proto, c)]["cpu_us_req"])
                     / 1e4 for rd in self.rounds if (rd, t, proto, c) in self.val]) for t in TARGETS]
        return "| %s | proxy busy %% of its core | %s | | | |" % (
            label(proto, c, self.rate), " | ".join(fmt(v, 0) for v in busy))

    def peak_rss_kb(self, rd, target):
        """Per round, the maximum VmHWM seen (after the 256-connection points)."""
        return max(int(r["rss_kb"]) for r in self.rows if r["round"] == rd and r["target"] == target)

    def has(self, rd, target):
        return any(r["round"] == rd and r["target"] == target for r in self.rows)

    def rss_ratio(self, target):
        return med([self.peak_rss_kb(rd, "cutover") / max(1, self.peak_rss_kb(rd, target))
                    for rd in self.rounds if self.has(rd, "cutover") and self.has(rd, target)])

    def rss_line(self):
        rss = [med([self.peak_rss_kb(rd, t) / 1024.0 for rd in self.rounds if self.has(rd, t)]) for t in PROXIES]
        return "| all | peak RSS MiB | %s | %s | %s | n/a | %s | %s | n/a |" % (
            *[fmt(v, 1) for v in rss], fmt(self.rss_ratio("nginx")), fmt(self.rss_ratio("haproxy")))

    def flips_of(self):
        ft = {}
        for f in self.flips:
            ft.setdefault(f[1], []).append(f)
        return ft

    def flip_lines(self):
        ft = self.flips_of()
        if not ft:
            return []
        n = ft[next(iter(ft))][0][5]
        lines = []
        for col, name in ((3, "non-2xx"), (4, "socket errors"), (2, "requests")):
            cells = [fmt(med([float(f[col]) for f in ft.get(t, [])]), 0) for t in PROXIES]
            lines.append("| %s flips under load (wrk c=50) | %s (median of rounds) | %s | %s | %s | n/a | | | |"
                         % (n, name, *cells))
        cells = ["%d/%d" % (sum(int(f[6]) for f in ft.get(t, [])), sum(int(f[7]) for f in ft.get(t, [])))
                 for t in PROXIES]
        lines.append("| flips | failed flip calls / requests that missed the new pool (sum) | %s | %s | %s "
                     "| n/a | | | |" % tuple(cells))
        return lines

    # ---------------------------------------------------- notes, targets ---
    def notes(self):
        rows = self.rows
        errs = {t: sum(int(r["errors"]) for r in rows if r["target"] == t) for t in TARGETS}
        newup = {t: max([int(r["new_upstream"]) for r in rows if r["target"] == t] or [0]) for t in TARGETS}
        dirty = sum(1 for r in rows if r["state"] == "dirty")
        foreign = max([float(r["foreign_pct"]) for r in rows] or [0.0])
        steal = max([float(r["steal_pct"]) for r in rows] or [0.0])
        return [
            "Errors during throughput points (non-2xx + socket errors, all rounds): "
            + ", ".join("%s %d" % (t, errs[t]) for t in TARGETS) + ".",
            "Most new upstream connections the backends accepted during one measured point: "
            + ", ".join("%s %d" % (t, newup[t]) for t in TARGETS)
            + " (direct opens one per client connection; a proxy that reuses its upstream connections opens ~0).",
            "Foreign CPU (other processes) during a kept point: at most %.1f%% of one core; kept points flagged "
            "dirty: %d; highest steal: %.1f%%." % (foreign, dirty, steal),
        ]

    def rounds_text(self, key):
        return ", ".join(fmt(x) for x in self.nginx_rounds.get(key, []))

    def targets(self):
        """Each target (issue 4; issue 18 for TLS), met or not. Per-round ratios
        and nginx's own spread sit beside each verdict: a ratio near 1 with
        rounds on both sides is decided by noise, not by cutover."""
        out = [self.h1_target(c) for c in (50, 256) if self.verdict("h1", c, "rps") is not None]
        out += self.tls_targets()
        ft = self.flips_of()
        if "cutover" in ft:
            e = sum(int(f[3]) + int(f[4]) for f in ft["cutover"])
            out.append("errors under flips for cutover: %d (target 0: %s)" % (e, met(e == 0)))
        r = self.rss_ratio("nginx")
        out.append("peak RSS cutover/nginx %s (target <= 2: %s)" % (fmt(r), met(r <= 2)))
        return out

    def tls_targets(self):
        """Over TLS: at least nginx's throughput and at most its CPU per
        request; at least its full handshakes per second."""
        out = []
        for proto, c in point_keys(self.rows):
            if not proto.startswith(("tls-", "hs-")) or self.verdict(proto, c, "rps") is None:
                continue
            r, u = self.verdict(proto, c, "rps"), self.verdict(proto, c, "cpu_us_req")
            what = "handshakes/s" if proto in HANDSHAKES else "throughput"
            text = "%s: %s cutover/nginx %s (rounds %s)" % (
                label(proto, c, self.rate), what, fmt(r), self.rounds_text((proto, c, "rps")))
            if proto != "hs-resume":
                text += " (target >= 1: %s)" % met(r >= 1)
            text += ", CPU per %s cutover/nginx %s (rounds %s)" % (
                "handshake" if proto in HANDSHAKES else "request", fmt(u),
                self.rounds_text((proto, c, "cpu_us_req")))
            if proto.startswith("tls-"):
                text += " (target <= 1: %s)" % met(u <= 1)
            out.append(text)
        return out

    def h1_target(self, c):
        r, p = self.verdict("h1", c, "rps"), self.verdict("h1", c, "p99")
        own = [float(self.val[(rd, "nginx", "h1", c)]["p99"]) for rd in self.rounds
               if (rd, "nginx", "h1", c) in self.val] or [float("nan")]
        text = ("HTTP/1.1 c=%d: throughput cutover/nginx %s (rounds %s; target >= 1: %s), p99 cutover/nginx %s "
                "(rounds %s; nginx's own p99 %s-%s ms; target <= 1: %s)" % (
                    c, fmt(r), self.rounds_text(("h1", c, "rps")), met(r >= 1), fmt(p),
                    self.rounds_text(("h1", c, "p99")), fmt(min(own), 3), fmt(max(own), 3), met(p <= 1)))
        # The same connections at a fixed rate every target sustains: the
        # latency figure the closed-loop p99 above is not (issue 4).
        q = self.verdict("rate", c, "p99")
        if q is not None:
            text += "; at a fixed %d req/s: p99 cutover/nginx %s (rounds %s)" % (
                self.rate, fmt(q), self.rounds_text(("rate", c, "p99")))
        return text


def met(ok):
    return "met" if ok else "NOT met"


def render(header, rows, flips, rate, tls_seen=None):
    """The whole results file: header, table, notes, targets. `tls_seen`:
    target -> what h2load negotiated with it over TLS."""
    t = Table(rows, flips, rate)
    notes = t.notes()
    if tls_seen:
        notes.append("Negotiated over TLS (h2load): " + "; ".join(
            "%s %s" % (k, v or "?") for k, v in sorted(tls_seen.items())) + ".")
    return (header + "\n" + "\n".join(t.lines) + "\n\n" + "\n".join("- " + n for n in notes)
            + "\n\nTargets (%s):\n\n" % ("issue 18, over TLS" if tls_seen is not None else "issue 4") + "\n".join("- " + x for x in t.targets()) + "\n")


# ----------------------------------------------------------- header ---
def machine_line():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].rstrip("\n")
                model = model[1:] if model.startswith(" ") else model
                break
    with open("/proc/meminfo") as f:
        mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    return "%d CPUs, %s, kernel %s, %.1f GiB RAM" % (
        len(os.sched_getaffinity(0)), model, platform.release(), mem_kb / 1048576)


def header(s, tools, title, repeats, idle_waits):
    """The results file's first lines: what was measured, where and how."""
    mode = "quick" if s.quick else "full"
    conns = " or ".join(map(str, s.rate_conns))
    return "".join(line + "\n" for line in [
        "# cutover load benchmark, " + title,
        "",
        "- machine: " + machine_line(),
        "- peers: nginx %s, HAProxy %s; load: %s" % (tools.nginx_version, tools.haproxy_version,
                                                      tools.load_generators()),
        "- mode: %s, %d round(s), %d s warm-up + %d s measured per point, target order rotated each round; "
        "proxy under test alone on CPU 0 (one worker each), load generator and two nginx backends on CPU 1; "
        "upstream HTTP/1.1 keep-alive, 50/50 split" % (mode, s.rounds, s.warm, s.dur),
        "- values: medians over rounds; ratios: median of per-round ratios (req/s: higher is better; latency, "
        "CPU, RSS: lower is better); h2c uses one stream per connection; 'fixed' rows: oha at %d req/s over %s "
        "connections, latency-corrected (the latency figure: every target sustains that rate)" % (s.rate, conns),
        "- groups repeated because other processes used the CPU: %d; seconds spent waiting for an idle machine: %d"
        % (repeats, idle_waits),
    ] + ([TLS_METHOD % (s.hs_conns, s.hs_conns)] if s.tls else []))


TLS_METHOD = (
    "- TLS (--tls): self-signed certificates for bench.test made by openssl for the run, ECDSA P-256 for every "
    "point but 'full handshakes RSA' (RSA-2048); the proxies terminate TLS and forward plain HTTP/1.1 to the same "
    "backends; TLS 1.2 and 1.3 enabled everywhere, session cache and tickets on (the defaults); h2load is told "
    "OpenSSL's default TLS 1.3 suite order, the one wrk offers; 'full handshakes': h2load runs back to back, each "
    "%d new connections with one request (a new process has no session to resume); 'resumed handshakes': %d h2load "
    "clients that open a new connection for every request (Connection: close) and resume the session of the one "
    "before (1 in 20 handshakes is full); handshakes/s counts requests done, one per handshake, and CPU per "
    "handshake includes that request")
