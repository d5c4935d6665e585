"""Install or locate the peers and load generators; build cutover."""

import os
import shutil
import subprocess
import sys

from .procs import die, log

# command -> Debian package that provides it
PACKAGES = {
    "nginx": "nginx",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
    "taskset": "util-linux",
    "git": "git",
    "openssl": "openssl",
}


class Tools:
    """Where the tools are and which versions they are."""

    def __init__(self, s):
        self.oha = None
        install_missing()
        if s.oha:
            self.oha = locate_oha(s.repo)
        self.nginx_version = first_line(["nginx", "-v"]).split("nginx/")[-1]
        self.haproxy_version = first_line(["haproxy", "-v"]).split()[2]

    def load_generators(self):
        """'wrk debian/4.1.0-3+b2, h2load nghttp2/1.52.0[, oha 1.16.0]' for the header."""
        wrk = " ".join(first_line(["wrk", "-v"]).split()[:2])
        h2load = first_line(["h2load", "--version"]).split()[-1]
        out = "%s, h2load %s" % (wrk, h2load)
        if self.oha:
            out += ", " + first_line([self.oha, "--version"])
        return out


def first_line(cmd):
    """The first line a command prints (stdout and stderr together)."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return (r.stdout.splitlines() or [""])[0]


def install_missing():
    missing = [c for c in PACKAGES if shutil.which(c) is None]
    if not missing:
        return
    pkgs = [PACKAGES[c] for c in missing]
    if os.getuid() != 0 or shutil.which("apt-get") is None:
        die("missing: %s; install them with: apt-get install %s (as root)" % (" ".join(missing), " ".join(pkgs)))
    # Debian's package may start a system nginx on :80; it idles and is not ours.
    log("installing Debian packages: " + " ".join(pkgs))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def locate_oha(repo):
    """oha on PATH, else target/tools/bin/oha, built there once if absent."""
    oha = shutil.which("oha") or str(repo / "target/tools/bin/oha")
    if not os.access(oha, os.X_OK):
        root = repo / "target/tools"
        log("oha not found: building it (cargo install --locked oha --root %s; ~8 minutes on 2 cores)" % root)
        subprocess.run(["cargo", "install", "--locked", "oha", "--root", str(root)], check=True, stdout=sys.stderr)
    return oha


def build_cutover(s):
    """The release binary (no AWS SDK), built unless --no-build."""
    binary = s.target_dir / "release/cutover"
    if s.build:
        log("building cutover (release, --no-default-features) in %s" % s.target_dir)
        env = dict(os.environ, CARGO_TARGET_DIR=str(s.target_dir))
        r = subprocess.run(["cargo", "build", "--release", "--no-default-features", "-q"], cwd=s.repo, env=env,
                           stdout=sys.stderr)
        if r.returncode != 0:
            die("cargo build failed")
    if not os.access(binary, os.X_OK):
        die("no cutover binary at %s (drop --no-build)" % binary)
    return binary
