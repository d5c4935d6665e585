"""The measured points: a warm-up and a measured load per target, grouped by
protocol and connection count, repeated when other processes disturbed them;
and the flips under load."""

import os
import subprocess
import sys
import time

from . import machine, parse, report
from .procs import log
from .settings import TARGETS, TLS_PROTOS

# TLS 1.3 suites in OpenSSL's default order, the order wrk offers: h2load's
# own list starts with AES-128, and the proxies differ in whose order they
# follow (HAProxy its own, nginx and rustls the client's), so h2load is told
# this one and every target agrees on AES-256-GCM with every tool.
TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"

# Requests per client in one resumed-handshake batch: its first handshake is
# full, the others resume.
RESUME_PER_CLIENT = 20


class Points:
    """The points and flips of a run, measured on a Lab."""

    def __init__(self, settings, lab, oha):
        self.s = settings
        self.lab = lab
        self.oha = oha
        self.rows = []  # point rows (report.COLS), kept ones only
        self.flips = []  # flip rows
        self.repeats = 0  # groups repeated because other processes used the CPU
        self.idle_waits = 0  # seconds spent waiting for an idle machine
        self.tls_seen = {}  # target -> what h2load negotiated over TLS (protocol, cipher, key exchange, ALPN)

    def path(self, name):
        return self.lab.path(name)

    # ----------------------------------------------------------- loads ---
    def load(self, proto, conns, seconds, port, out):
        """One load run on CPU 1, its output in `out`. A load generator that
        outlives its run by 30 s is stopped (h2load once never finished when
        connections were dropped at accept); the point then shows what it
        printed: 0 req/s when it printed nothing, which stands out."""
        if proto in ("hs-resume", "hs-ec", "hs-rsa"):
            return self.load_batches(proto, conns, seconds, port, out)
        cmd = ["taskset", "-c", "1"] + self.load_command(proto, conns, seconds, port, out)
        with open(out, "w") as f:
            if proto == "rate":
                with open(out + ".err", "w") as err:
                    self.lab.procs.run_limited(cmd, seconds + 30, f, err)
            else:
                self.lab.procs.run_limited(cmd, seconds + 30, f)

    def load_batches(self, proto, conns, seconds, port, out):
        """Handshakes per second, closed loop: h2load runs back to back on
        CPU 1 until `seconds` have passed, each of `conns` new connections.
        Full handshakes (hs-ec, hs-rsa): one request per connection, and a
        new h2load process never has a session to resume. Resumed (hs-resume):
        every request on a new connection (`Connection: close`), which h2load
        resumes with the session its client got on the connection before.
        `out` holds every run's output and a last line with the wall time."""
        url = "https://127.0.0.1:%d/" % port
        per = conns * (RESUME_PER_CLIENT if proto == "hs-resume" else 1)
        cmd = ["taskset", "-c", "1", "h2load", "-t1", "-c%d" % conns, "-n%d" % per, "--h1",
               "--tls13-ciphers=" + TLS13_SUITES, url]
        if proto == "hs-resume":
            cmd[-1:-1] = ["-H", "connection: close"]
        start = time.time()
        runs = 0
        with open(out, "w") as f:
            while time.time() - start < seconds:
                self.lab.procs.run_limited(cmd, 30, f)
                f.flush()
                runs += 1
            f.write("batches: %d runs in %.6f s\n" % (runs, time.time() - start))

    def load_command(self, proto, conns, seconds, port, out):
        """wrk for HTTP/1.1 (h1, and tls-h1 over TLS), h2load with one stream
        per connection for h2c (h2; tls-h2 is h2 over TLS by ALPN; its
        per-request log beside `out`), oha at a fixed rate (rate)."""
        tls = proto in TLS_PROTOS
        url = "%s://127.0.0.1:%d/" % ("https" if tls else "http", port)
        if proto in ("h1", "tls-h1"):
            return ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", url]
        if proto in ("h2", "tls-h2"):
            if os.path.exists(out + ".log"):
                os.remove(out + ".log")
            suites = ["--tls13-ciphers=" + TLS13_SUITES] if tls else []
            return ["h2load", "-t1", "-c%d" % conns, "-m1", "-D%d" % seconds, "--log-file=" + out + ".log",
                    *suites, url]
        return [self.oha, "-z", "%ds" % seconds, "-q", str(self.s.rate), "--latency-correction",
                "-c", str(conns), "--no-tui", "--output-format", "json", url]

    def result(self, proto, out):
        text = read(out)
        if proto in ("h1", "tls-h1"):
            return parse.parse_wrk(text)
        if proto in ("h2", "tls-h2"):
            return parse.parse_h2load(text, read(out + ".log"))
        if proto in ("hs-resume", "hs-ec", "hs-rsa"):
            return parse.parse_h2load_batches(text)
        return parse.parse_oha(text)

    # ---------------------------------------------------------- points ---
    def point(self, rnd, target, proto, conns):
        """One measured point: warm-up, then the measured run with CPU accounting."""
        port = self.s.ports.of(target, "h1" if proto == "rate" else proto)
        out = self.path("r%d-%s-%s-%d.txt" % (rnd, target, proto, conns))
        self.load(proto, conns, self.s.warm, port, self.path("warm.txt"))
        pids = self.lab.pids_of(target)
        before = self.before(pids)
        self.load(proto, conns, self.s.dur, port, out)
        after = self.after(pids)
        rss = machine.hwm_kb(pids) if pids else 0
        self.audit(rnd, target, proto, conns, before, after)
        row = report.point_row(
            rnd, target, proto, conns, self.result(proto, out),
            proxy_ticks=after["proxy"] - before["proxy"],
            cpu0=before["cpu"], cpu1=after["cpu"],
            foreign=parse.foreign_ticks(before["foreign"], after["foreign"]),
            wall=after["wall"] - before["wall"],
            new_upstream=sum(b - a - 1 for a, b in zip(before["accepts"], after["accepts"])),
            rss_kb=rss, hz=self.s.hz, foreign_max=self.s.foreign_max)
        self.rows.append(row)
        if proto == "tls-h2":
            self.tls_seen[target] = parse.h2load_tls(read(out))
        print(report.show_point(row), file=sys.stderr, flush=True)

    def before(self, pids):
        """Counters just before a measured run; the clock last."""
        s = {"accepts": self.lab.accepts()}
        s.update(self.ticks(pids))
        s["foreign"], s["cpu"], s["wall"] = machine.foreign_sample(), machine.cpu_sample(), time.time()
        return s

    def after(self, pids):
        """The same counters just after, in the reverse order: the clock first."""
        s = {"wall": time.time(), "cpu": machine.cpu_sample(), "foreign": machine.foreign_sample()}
        s.update(self.ticks(pids))
        s["accepts"] = self.lab.accepts()
        return s

    def ticks(self, pids):
        """CPU ticks so far of the target, the backends and the load generators."""
        return {"proxy": machine.ticks(pids), "backends": machine.ticks(self.lab.backend_pids()),
                "loadgen": machine.child_ticks(self.s.hz)}

    def audit(self, rnd, target, proto, conns, a, b):
        """The CPU accounting behind each point, in WORK/accounting.log."""
        with open(self.path("accounting.log"), "a") as f:
            f.write("%d %s %s c=%d proxy=%d backends=%d loadgen=%d wall=%.9f..%.9f\n%s\n%s\nothers before: %s\n"
                    "others after: %s\n" % (
                        rnd, target, proto, conns, b["proxy"] - a["proxy"], b["backends"] - a["backends"],
                        b["loadgen"] - a["loadgen"], a["wall"], b["wall"], parse.format_cpu_sample(a["cpu"]),
                        parse.format_cpu_sample(b["cpu"]), machine.format_foreign(a["foreign"]),
                        machine.format_foreign(b["foreign"])))

    def group(self, rnd, proto, conns, order):
        """All targets at one protocol and connection count, repeated (up to 3
        tries) while other processes used the CPU during it."""
        for attempt in (1, 2, 3):
            for t in order:
                self.point(rnd, t, proto, conns)
            self.save()
            if all(r["state"] == "clean" for r in self.rows[-len(order):]):
                return
            if attempt == 3:
                log("still disturbed after 3 tries; keeping these points, flagged")
                return
            log("other processes used the CPU during %s c=%d: repeating it" % (proto, conns))
            self.repeats += 1
            del self.rows[-len(order):]
            self.idle_waits += machine.wait_idle(self.s)

    def save(self):
        """points.tsv and flips.tsv in the work directory, as they stand."""
        report.write_tsv(self.path("points.tsv"), [report.tsv_line(r) for r in self.rows])
        report.write_tsv(self.path("flips.tsv"), ["\t".join(map(str, f)) for f in self.flips])

    # ----------------------------------------------------------- flips ---
    def flip_test(self, rnd, target):
        """FLIPS flips blue <-> green, evenly spaced, during a wrk run at 50 connections."""
        port = self.s.ports.of(target, "h1")
        out = self.path("r%d-%s-flip.txt" % (rnd, target))
        gap = float("%.3f" % (self.s.flip_dur * 0.9 / self.s.flips))
        cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d%ds" % self.s.flip_dur, "--latency",
               "http://127.0.0.1:%d/" % port]
        with open(out, "w") as f:
            wrk = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        self.lab.procs.running.append(wrk)
        time.sleep(0.5)
        fails = 0
        for i in range(1, self.s.flips + 1):
            if not self.lab.flip(target, "blue" if i % 2 == 0 else "green"):
                fails += 1
            time.sleep(gap)
        wrk.wait()
        self.lab.procs.forget(wrk)
        self.lab.flip(target, "green")
        wrong = self.lab.missed_pool(target, "green")
        self.lab.flip(target, "blue")
        wrong += self.lab.missed_pool(target, "blue")
        self.lab.restore_split(target)
        row = report.flip_row(rnd, target, parse.parse_wrk(read(out)), self.s.flips, fails, wrong)
        self.flips.append(row)
        self.save()
        print("\t".join(row), file=sys.stderr, flush=True)

    # ---------------------------------------------------------- rounds ---
    def rounds(self):
        """Every round: wait for quiet, fresh proxies, every group in a rotated
        target order, the flips, proxies stopped."""
        if self.s.tls:
            return self.tls_rounds()
        for rnd in range(1, self.s.rounds + 1):
            order = target_order(rnd)
            self.idle_waits += machine.wait_idle(self.s)
            self.lab.start_proxies()
            log("round %d/%d, order: %s" % (rnd, self.s.rounds, " ".join(order)))
            for proto in ("h1", "h2"):
                for c in self.s.conns:
                    self.group(rnd, proto, c, order)
            if self.oha:
                for c in self.s.rate_conns:
                    self.group(rnd, "rate", c, order)
            for t in order:
                if t != "direct":
                    self.flip_test(rnd, t)
            self.lab.stop_proxies()


    def tls_rounds(self):
        """The --tls rounds: the proxies only (the backends speak plain HTTP),
        no flips (switching does not depend on how the client connected)."""
        groups = ([("tls-h1", c) for c in (50, 256)] + [("tls-h2", c) for c in (50, 256)]
                  + [(p, self.s.hs_conns) for p in ("hs-resume", "hs-ec", "hs-rsa")])
        for rnd in range(1, self.s.rounds + 1):
            order = [t for t in target_order(rnd) if t != "direct"]
            self.idle_waits += machine.wait_idle(self.s)
            self.lab.start_proxies()
            log("round %d/%d (TLS), order: %s" % (rnd, self.s.rounds, " ".join(order)))
            for proto, c in groups:
                self.group(rnd, proto, c, order)
            self.lab.stop_proxies()


def target_order(rnd):
    """Round 1: cutover nginx haproxy direct; round 2: nginx haproxy direct cutover; ..."""
    return [TARGETS[(i + rnd - 1) % len(TARGETS)] for i in range(len(TARGETS))]


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""
