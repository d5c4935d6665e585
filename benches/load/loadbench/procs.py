"""Start, pin and stop the processes a run needs; clean up on exit.

Every process is started through `taskset -c CPU`, its output in
WORK/<name>.out, and remembered until it is stopped, so that an exit (normal,
error or signal) stops all of them and never signals a recycled pid.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    log("ERROR: " + msg)
    raise SystemExit(1)


class Procs:
    """The work directory and the processes started in it."""

    def __init__(self, keep):
        self.work = tempfile.mkdtemp(prefix="cutover-bench.")
        self.keep = keep
        self.running = []  # Popen objects not yet stopped

    def path(self, name):
        return os.path.join(self.work, name)

    def start_on(self, cpu, name, cmd):
        """Starts cmd in the background on the given CPU; returns its Popen."""
        out = open(self.path(name + ".out"), "w")
        p = subprocess.Popen(["taskset", "-c", str(cpu), *map(str, cmd)], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.running.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, grace=5.0):
        """Stops one process we started (sig, then KILL after grace seconds) and forgets it."""
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.forget(p)

    def forget(self, p):
        if p in self.running:
            self.running.remove(p)

    def run_limited(self, cmd, seconds, stdout, stderr=subprocess.STDOUT):
        """Runs cmd in the foreground for at most `seconds` (TERM, then KILL 5 s
        later, like timeout -k 5), stopped by cleanup if the run ends meanwhile."""
        p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        self.running.append(p)
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            pass
        self.stop(p)
        return p.returncode

    def cleanup(self):
        """TERM to all, KILL after 3 s, then remove the work directory unless --keep."""
        for p in self.running:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 3
        while any(p.poll() is None for p in self.running) and time.monotonic() < deadline:
            time.sleep(0.3)
        for p in self.running:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.running = []
        if self.keep:
            log("work dir kept: " + self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def exit_on_signals():
    """TERM and INT end the run through the normal exit path (and its cleanup)."""

    def handler(signum, _frame):
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def connects(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(port):
    """Waits up to 10 s for something to accept on 127.0.0.1:port."""
    for _ in range(100):
        if connects(port):
            return True
        time.sleep(0.1)
    return False


def port_free(port):
    return not connects(port)


def tail(path, n=5):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
