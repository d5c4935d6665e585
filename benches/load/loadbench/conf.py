"""The backend and proxy configs: templates in benches/load/conf/, filled
and written to the work directory, then checked by each program."""

import os
import string
import subprocess
from pathlib import Path

from .procs import die

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfTemplate(string.Template):
    delimiter = "@"  # nginx and HAProxy use $ and % themselves


def render(template, **values):
    text = (CONF_DIR / template).read_text()
    return ConfTemplate(text).substitute(values)


def version_tuple(v):
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def ngx_h2_listen(nginx_version, port):
    """nginx up to 1.25.1 takes `listen ... http2` for h2c; later ones `http2 on`."""
    if version_tuple(nginx_version) <= (1, 25, 1):
        return "listen 127.0.0.1:%d http2;" % port
    return "listen 127.0.0.1:%d; http2 on;" % port


def nginx_head(work, name):
    """The start of an nginx config; its pid, error log and temp dirs under work/name."""
    os.makedirs(os.path.join(work, name), exist_ok=True)
    return render("nginx-head.conf", work=work, name=name).rstrip("\n")


def backend_conf(work, n, port, status_port, body, h2_server=""):
    return render("nginx-backend.conf", head=nginx_head(work, "be%d" % n), listen=port,
                  body=body, h2_server=h2_server, status_port=status_port)


def ngx_tls_listen(nginx_version, port):
    """A TLS listener offering h2 and http/1.1 by ALPN, in the nginx version's syntax."""
    if version_tuple(nginx_version) <= (1, 25, 1):
        return "listen 127.0.0.1:%d ssl http2;" % port
    return "listen 127.0.0.1:%d ssl; http2 on;" % port


def nginx_tls_servers(work, ports, nginx_version):
    """The two TLS servers (ECDSA P-256 and RSA-2048) of the nginx proxy."""
    return "".join(
        render("nginx-proxy-tls.conf", listen_tls=ngx_tls_listen(nginx_version, port),
               cert=os.path.join(cert_dir(work), kind + ".pem"), key=os.path.join(cert_dir(work), kind + ".key"))
        for kind, port in (("ec", ports.ngx_tls_ec), ("rsa", ports.ngx_tls_rsa)))


def nginx_proxy_conf(work, ports, nginx_version, backends, tls=False):
    servers = " ".join("server 127.0.0.1:%d;" % p for p in backends)
    return render("nginx-proxy.conf", head=nginx_head(work, "ngx"), servers=servers,
                  port_h1=ports.ngx_h1, listen_h2=ngx_h2_listen(nginx_version, ports.ngx_h2),
                  tls_servers=nginx_tls_servers(work, ports, nginx_version) if tls else "")


# (file stem, openssl req -newkey argument): the same certificates for every proxy
CERTIFICATES = (("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                ("rsa", ["-newkey", "rsa:2048"]))


# cutover's config, in a directory of its own: cutover watches the directory
# of its config file, and the work directory is written to during every
# point (h2load's per-request log), which would wake that watch all along
# (on CPU 0, beside the proxy). Relative to the work directory.
CUTOVER_TOML = "cutover/cutover.toml"


def cert_dir(work):
    """The certificates' own directory: cutover watches the directories of its
    certificate files, and the work directory is written to during every
    point (h2load's per-request log), which would wake that watch all along."""
    return os.path.join(work, "certs")


def write_certificates(work):
    """Self-signed certificates for bench.test, made here (no key is checked in):
    KIND.pem and KIND.key for nginx and cutover, KIND.combined.pem for HAProxy."""
    os.makedirs(cert_dir(work), exist_ok=True)
    for kind, newkey in CERTIFICATES:
        pem, key = os.path.join(cert_dir(work), kind + ".pem"), os.path.join(cert_dir(work), kind + ".key")
        r = subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "2", "-subj", "/CN=bench.test",
                            "-addext", "subjectAltName=DNS:bench.test", "-keyout", key, "-out", pem],
                           capture_output=True, text=True)
        if r.returncode:
            die("openssl could not make the %s certificate: %s" % (kind, r.stderr.strip()))
        Path(cert_dir(work), kind + ".combined.pem").write_text(Path(pem).read_text() + Path(key).read_text())


def write_configs(work, ports, nginx_version, cutover_bin, tls=False):
    """Writes be1.conf, be2.conf, ngx-{split,blue,green}.conf, haproxy.cfg and
    cutover/cutover.toml into work, and has each program check its own. With `tls`,
    each proxy also gets two TLS listeners (ECDSA and RSA certificates, made
    here) in front of the same backends."""
    files = {}
    if tls:
        write_certificates(work)
    h2 = render("nginx-backend-h2.conf", listen_h2=ngx_h2_listen(nginx_version, ports.be1_h2), body="blue")
    files["be1.conf"] = backend_conf(work, 1, ports.be1, ports.be1_st, "blue", h2)
    files["be2.conf"] = backend_conf(work, 2, ports.be2, ports.be2_st, "gren")
    for name, backends in (("split", [ports.be1, ports.be2]), ("blue", [ports.be1]), ("green", [ports.be2])):
        files["ngx-%s.conf" % name] = nginx_proxy_conf(work, ports, nginx_version, backends, tls)
    files["haproxy.cfg"] = render("haproxy.cfg", work=work, port_h1=ports.hap_h1, port_h2=ports.hap_h2,
                                  be1=ports.be1, be2=ports.be2)
    files[CUTOVER_TOML] = render("cutover.toml", admin=ports.cut_admin, port=ports.cut,
                                   be1=ports.be1, be2=ports.be2)
    if tls:
        files["haproxy.cfg"] += render("haproxy-tls.cfg", certs=cert_dir(work), port_ec=ports.hap_tls_ec,
                                       port_rsa=ports.hap_tls_rsa)
        files[CUTOVER_TOML] += render("cutover-tls.toml", certs=cert_dir(work), port_ec=ports.cut_tls_ec,
                                        port_rsa=ports.cut_tls_rsa)
    os.makedirs(os.path.join(work, os.path.dirname(CUTOVER_TOML)), exist_ok=True)
    for name, text in files.items():
        Path(work, name).write_text(text)
    check_configs(work, cutover_bin)


def check_configs(work, cutover_bin):
    quiet = {"stdout": subprocess.DEVNULL}
    if subprocess.run(["haproxy", "-c", "-q", "-f", os.path.join(work, "haproxy.cfg")]).returncode:
        die("haproxy rejects its config")
    if subprocess.run(["nginx", "-t", "-q", "-p", work, "-c", os.path.join(work, "ngx-split.conf")]).returncode:
        die("nginx rejects the proxy config")
    if subprocess.run([str(cutover_bin), "check", os.path.join(work, CUTOVER_TOML)], **quiet).returncode:
        die("cutover rejects its config")
