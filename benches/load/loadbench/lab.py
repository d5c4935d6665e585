"""The backends and proxies under test: starting them, asking them, and
flipping them between the blue and green pools."""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

from . import conf, machine, parse
from .procs import die, port_free, tail, wait_port
from .settings import PROXIES, TARGETS


def http_request(port, method="GET", path="/", body=None, timeout=10):
    """(status, body) of one request to 127.0.0.1:port on a new connection; (0, "") on failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        conn.close()


def http_ok(port, method="GET", path="/", body=None):
    return 200 <= http_request(port, method, path, body)[0] < 400


def https_ok(port):
    """A GET over TLS to 127.0.0.1:port answers 2xx (the certificates are
    the run's own self-signed ones: not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/")
        return 200 <= conn.getresponse().status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Lab:
    """Two nginx backends on CPU 1; cutover, nginx and HAProxy on CPU 0."""

    def __init__(self, settings, procs, cutover_bin):
        self.s = settings
        self.ports = settings.ports
        self.procs = procs
        self.work = procs.work
        self.cutover_bin = cutover_bin
        self.backends = []  # Popen of be1, be2
        self.proxies = {}  # target -> Popen

    def path(self, name):
        return os.path.join(self.work, name)

    def start_backends(self):
        for p in self.ports.all():
            if not port_free(p):
                die("port 127.0.0.1:%d is in use (set BENCH_PORT_BASE)" % p)
        for n in (1, 2):
            conf = self.path("be%d.conf" % n)
            self.backends.append(self.procs.start_on(1, "be%d" % n, ["nginx", "-p", self.work, "-c", conf]))
        if not all(wait_port(p) for p in (self.ports.be1, self.ports.be2, self.ports.be1_h2)):
            die("backends did not start: " + tail(self.path("be1.out")) + tail(self.path("be2.out")))

    def start_proxies(self):
        """The three proxies, fresh each round so that peak RSS is per round, on CPU 0."""
        shutil.copy(self.path("ngx-split.conf"), self.path("ngx.conf"))
        cmds = {
            "cutover": [self.cutover_bin, "run", "--config", self.path(conf.CUTOVER_TOML), "--workers", "1"],
            "nginx": ["nginx", "-p", self.work, "-c", self.path("ngx.conf")],
            "haproxy": ["haproxy", "-db", "-f", self.path("haproxy.cfg")],
        }
        for t in PROXIES:
            self.proxies[t] = self.procs.start_on(0, t, cmds[t])
        for t in PROXIES:
            if not wait_port(self.ports.of(t, "h1")):
                die("%s did not start: %s" % (t, tail(self.path(t + ".out"))))
        if not wait_port(self.ports.cut_admin):
            die("cutover's admin API did not start")
        for t in TARGETS:
            if not http_ok(self.ports.of(t, "h1")):
                die(t + " does not answer")
        if self.s.tls:
            for t in PROXIES:
                for proto in ("hs-ec", "hs-rsa"):
                    if not https_ok(self.ports.of(t, proto)):
                        die("%s does not answer over TLS on port %d" % (t, self.ports.of(t, proto)))

    def stop_proxies(self):
        for t in PROXIES:
            self.procs.stop(self.proxies.pop(t))

    def pids_of(self, target):
        """The target's processes (nginx: master and worker); none for direct."""
        p = self.proxies.get(target)
        return machine.tree(p.pid) if p else []

    def backend_pids(self):
        return [pid for p in self.backends for pid in machine.tree(p.pid)]

    def accepts(self):
        """The two backends' accepted-connection counters (stub_status)."""
        return [parse.stub_status_accepts(http_request(port)[1]) for port in (self.ports.be1_st, self.ports.be2_st)]

    # ------------------------------------------------------------ flips ---
    def flip(self, target, to):
        """Sends all new requests to pool `to` (blue|green); True if the proxy took it."""
        if target == "cutover":
            body = json.dumps({"to": to, "reason": "bench"})
            return http_ok(self.ports.cut_admin, "POST", "/v1/services/web/switch", body)
        if target == "haproxy":
            # Raise the new pool before draining the old one, as an operator
            # would: the other order leaves a moment with no server (503s).
            other = "blue" if to == "green" else "green"
            return self.haproxy_command("set weight web/%s 100; set weight web/%s 0" % (to, other)).strip() == ""
        return self.nginx_reload("ngx-%s.conf" % to)

    def restore_split(self, target):
        if target == "cutover":
            body = json.dumps({"split": {"blue": 50, "green": 50}, "reason": "bench"})
            return http_ok(self.ports.cut_admin, "PUT", "/v1/services/web/split", body)
        if target == "haproxy":
            self.haproxy_command("set weight web/blue 100; set weight web/green 100")
            return True
        return self.nginx_reload("ngx-split.conf")

    def haproxy_command(self, cmd):
        """One command on HAProxy's runtime API (the stats socket); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            try:
                sock.connect(self.path("haproxy.sock"))
                sock.sendall((cmd + "\n").encode())
                chunks = []
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
            except OSError as e:
                return "error: %s" % e
        return b"".join(chunks).decode(errors="replace")

    def nginx_reload(self, conf):
        shutil.copy(self.path(conf), self.path("ngx.conf"))
        with open(self.path("ngx-reload.log"), "a") as errlog:
            cmd = ["nginx", "-q", "-p", self.work, "-c", self.path("ngx.conf"), "-s", "reload"]
            return subprocess.run(cmd, stderr=errlog).returncode == 0

    def missed_pool(self, target, to):
        """After a flip to `to`: how many of 20 new requests did not reach that pool."""
        want = "gren" if to == "green" else "blue"
        time.sleep(0.5)
        port = self.ports.of(target, "h1")
        bad = 0
        for _ in range(20):
            status, body = http_request(port)
            if not (200 <= status < 400 and body.strip() == want):
                bad += 1
        return bad
