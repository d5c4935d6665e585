"""Flags, environment variables and ports: everything a run is told."""

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

USAGE_EPILOG = """\
Environment: CARGO_TARGET_DIR (where cutover is built), BENCH_PORT_BASE
(default 18000), BENCH_IDLE_MIN (per-CPU idle % required before a round,
default 90), BENCH_FOREIGN_MAX (CPU % of one core that other processes may
use during a point before it is repeated, default 10), BENCH_MAX_WAIT
(seconds to wait for an idle machine before giving up, default 1800),
BENCH_COMMIT (the commit to name when the tree is not a git checkout),
BENCH_PROFILE_CONNS (connections for --profile, default 50),
BENCH_PROFILE_TARGET (the proxy --profile records: cutover, nginx or haproxy;
default cutover).
Needs root for apt-get when tools are missing. All traffic is to 127.0.0.1.
"""

TARGETS = ["cutover", "nginx", "haproxy", "direct"]
PROXIES = ["cutover", "nginx", "haproxy"]

# The --tls points: keep-alive HTTP/1.1 (wrk) and h2 (h2load) over TLS with
# the ECDSA certificate; resumed handshakes (h2load, a new connection per
# request); full handshakes with the ECDSA and the RSA certificate (batches
# of h2load runs, one request per connection, no session reuse).
TLS_PROTOS = ["tls-h1", "tls-h2", "hs-resume", "hs-ec", "hs-rsa"]


@dataclass
class Ports:
    """All on 127.0.0.1, at fixed offsets from BENCH_PORT_BASE."""

    base: int

    def __post_init__(self):
        b = self.base
        self.be1, self.be2 = b + 1, b + 2  # backends, HTTP/1.1
        self.be1_h2 = b + 11  # backend 1, h2c (the direct HTTP/2 limit)
        self.be1_st, self.be2_st = b + 21, b + 22  # backends' stub_status
        self.cut, self.cut_admin = b + 80, b + 90  # cutover: h1 and h2c on one port
        self.ngx_h1, self.ngx_h2 = b + 81, b + 91
        self.hap_h1, self.hap_h2 = b + 82, b + 92
        # TLS listeners (--tls): an ECDSA P-256 and an RSA-2048 certificate
        self.cut_tls_ec, self.cut_tls_rsa = b + 100, b + 101
        self.ngx_tls_ec, self.ngx_tls_rsa = b + 102, b + 103
        self.hap_tls_ec, self.hap_tls_rsa = b + 104, b + 105

    def all(self):
        return [self.be1, self.be2, self.be1_h2, self.be1_st, self.be2_st, self.cut,
                self.cut_admin, self.ngx_h1, self.ngx_h2, self.hap_h1, self.hap_h2,
                self.cut_tls_ec, self.cut_tls_rsa, self.ngx_tls_ec, self.ngx_tls_rsa,
                self.hap_tls_ec, self.hap_tls_rsa]

    def of(self, target, proto):
        """The port a load generator aims at for a target and protocol (h1|h2)."""
        table = {
            "cutover": (self.cut, self.cut),
            "nginx": (self.ngx_h1, self.ngx_h2),
            "haproxy": (self.hap_h1, self.hap_h2),
            "direct": (self.be1, self.be1_h2),
        }
        if proto in TLS_PROTOS:
            tls = {
                "cutover": (self.cut_tls_ec, self.cut_tls_rsa),
                "nginx": (self.ngx_tls_ec, self.ngx_tls_rsa),
                "haproxy": (self.hap_tls_ec, self.hap_tls_rsa),
            }
            return tls[target][1 if proto == "hs-rsa" else 0]
        return table[target][0 if proto == "h1" else 1]


@dataclass
class Settings:
    quick: bool = False
    rounds: int = 3
    warm: int = 2  # seconds of warm-up per point
    dur: int = 10  # seconds measured per point
    conns: list = field(default_factory=lambda: [1, 50, 256])
    flips: int = 100
    flip_dur: int = 20
    rate: int = 5000  # oha's fixed rate, req/s
    rate_conns: list = field(default_factory=lambda: [50, 256])
    oha: bool = True
    build: bool = True
    keep: bool = False
    profile: str = ""  # h1|h2 for --profile
    syscalls: str = ""  # h1|h2 for --syscalls
    callgrind: bool = False
    tls: bool = False
    hs_conns: int = 100  # clients of the handshake points (a full-handshake batch's connections)
    repo: Path = Path(".")
    target_dir: Path = Path("target")
    ports: Ports = None
    idle_min: float = 90
    foreign_max: float = 10
    max_wait: int = 1800
    hz: int = 100

    @property
    def diagnostic(self):
        return bool(self.profile or self.syscalls or self.callgrind)


def _arg_parser():
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Load benchmark: cutover against nginx and HAProxy (and straight to one backend), "
        "side by side on this machine, reporting ratios. See docs/benchmarks.md.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 1 round, 1 s warm-up + 3 s per point, 50 and 256 connections (~3 min)")
    p.add_argument("--rounds", type=int, metavar="N", help="rounds (default 3; 1 with --quick)")
    p.add_argument("--no-oha", dest="oha", action="store_false", help="skip the fixed-rate latency points")
    p.add_argument("--no-build", dest="build", action="store_false", help="use the existing release binary")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--profile", nargs="?", const="h1", choices=["h1", "h2", "tls-h1", "tls-h2"],
                   help="no comparison: perf profile of cutover (or BENCH_PROFILE_TARGET) under load at 50 connections "
                   "(tls-h1, tls-h2: over TLS, as the --tls points)")
    p.add_argument("--syscalls", nargs="?", const="h1", choices=["h1", "h2"],
                   help="no timing: system calls per request of each proxy (strace -c -f, 20000 requests)")
    p.add_argument("--tls", action="store_true",
                   help="the TLS points instead of the plaintext ones: keep-alive HTTP/1.1 and h2 over TLS, "
                   "resumed and full handshakes per second (ECDSA P-256 and RSA-2048); cutover, nginx, HAProxy")
    p.add_argument("--callgrind", action="store_true",
                   help="no timing: user-space instructions per request of cutover (valgrind, 20000 requests)")
    return p


def from_command_line(argv, repo, environ=os.environ):
    a = _arg_parser().parse_args(argv)
    s = Settings(oha=a.oha, build=a.build, keep=a.keep, profile=a.profile or "",
                 syscalls=a.syscalls or "", callgrind=a.callgrind, quick=a.quick, tls=a.tls)
    if s.profile.startswith("tls-"):
        s.tls = True  # the proxies need their TLS listeners
    if a.quick:
        s.rounds, s.warm, s.dur, s.conns, s.flips, s.flip_dur = 1, 1, 3, [50, 256], 20, 4
    if a.rounds is not None:
        s.rounds = a.rounds
    if s.diagnostic or s.tls:
        s.oha = False
    s.repo = repo
    target = Path(environ.get("CARGO_TARGET_DIR") or repo / "target")
    s.target_dir = target if target.is_absolute() else repo / target
    s.ports = Ports(int(environ.get("BENCH_PORT_BASE", 18000)))
    s.idle_min = float(environ.get("BENCH_IDLE_MIN", 90))
    s.foreign_max = float(environ.get("BENCH_FOREIGN_MAX", 10))
    s.max_wait = int(environ.get("BENCH_MAX_WAIT", 1800))
    s.hz = os.sysconf("SC_CLK_TCK")
    return s
