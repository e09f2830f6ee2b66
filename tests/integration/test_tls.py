"""TLS for clients: gateway.tls listeners, certificates chosen by SNI with a
default, ALPN h2 and http/1.1, TLS 1.2+ with forward-secret AEAD ciphers only,
certificates reloaded on SIGHUP. Checked with real clients: curl (HTTP/1.1
and h2), openssl s_client and, where installed, testssl.sh.

Certificates come from a throw-away CA made with the openssl CLI."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import harness


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"
    return r.stdout


def _issue(d, name, serial):
    """A key and a CA-signed certificate for `name` (SAN), as NAME.key/.crt."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{name}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", str(serial),
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=refract test CA", cwd=d)
    _issue(d, "default.test", 100)
    _issue(d, "a.test", 200)
    return d


@pytest.fixture
def tls_stack(make_stack, media, pki, tmp_path):
    # The vhost's certificate files are copied so a test can replace them.
    for ext in ("crt", "key"):
        shutil.copy(os.path.join(pki, f"a.test.{ext}"), str(tmp_path / f"a.{ext}"))
    port = harness.free_port()
    st = make_stack(
        [
            {"name": "default.test", "default": True, "origin": "file://" + media["dir"]},
            {"name": "a.test", "origin": "file://" + media["dir"],
             "tls": {"cert": str(tmp_path / "a.crt"), "key": str(tmp_path / "a.key")}},
        ],
        workers=0,
        gateway={"tls": {"listen": f"127.0.0.1:{port}", "cert": os.path.join(pki, "default.test.crt"),
                         "key": os.path.join(pki, "default.test.key")}},
    )
    st.tls_port = port
    st.tmp = tmp_path
    return st


def _curl(st, pki, name, path, *extra):
    r = subprocess.run(
        ["curl", "-sS", "--cacert", os.path.join(pki, "ca.crt"), "--resolve", f"{name}:{st.tls_port}:127.0.0.1",
         "-D", "-", "-w", "\nHTTPVERSION=%{http_version}", *extra, f"https://{name}:{st.tls_port}{path}"],
        capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def _s_client(st, *args, stdin=b""):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{st.tls_port}", *args],
                       input=stdin, capture_output=True, timeout=30)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def _peer_cert(st, *args):
    """(subject CN, serial) of the certificate the gateway presents."""
    rc, out = _s_client(st, *args)
    assert rc == 0, out[-800:]
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S).group(0)
    r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-serial"], input=pem.encode(),
                       capture_output=True, timeout=10)
    text = r.stdout.decode()
    cn = re.search(r"CN ?= ?([^\s,/]+)", text).group(1)
    serial = int(re.search(r"serial=([0-9A-Fa-f]+)", text).group(1), 16)
    return cn, serial


@pytest.mark.parametrize("version_flag,want", [("--http1.1", "1.1"), ("--http2", "2")])
def test_https_get_over_http1_and_h2(tls_stack, pki, media, version_flag, want):
    out = _curl(tls_stack, pki, "a.test", "/hello.txt", version_flag)
    head, _, rest = out.partition(b"\r\n\r\n")
    body, _, ver = rest.rpartition(b"\nHTTPVERSION=")
    assert ver.decode() == want
    with open(media["hello.txt"], "rb") as f:
        assert body == f.read()
    assert re.search(rb"(?i)\r\nx-request-id: [0-9a-f]{32}", head), head
    assert re.search(rb"(?i)\r\ncache-status: refract; fwd=bypass", head), head


def test_sni_picks_the_vhost_certificate_with_a_default(tls_stack):
    assert _peer_cert(tls_stack, "-servername", "a.test") == ("a.test", 200)
    assert _peer_cert(tls_stack, "-servername", "unknown.test") == ("default.test", 100)
    assert _peer_cert(tls_stack, "-noservername") == ("default.test", 100)
    assert _peer_cert(tls_stack, "-servername", "default.test") == ("default.test", 100)


def test_alpn_offers_h2_and_http11(tls_stack):
    for proto in ("h2", "http/1.1"):
        rc, out = _s_client(tls_stack, "-servername", "a.test", "-alpn", proto)
        assert rc == 0 and f"ALPN protocol: {proto}" in out, out[-600:]


@pytest.mark.parametrize("args", [
    ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],   # TLS 1.1: refused
    ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],     # TLS 1.0: refused
    ["-tls1_2", "-cipher", "AES128-SHA"],           # no forward secrecy: refused
    ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"], # CBC: refused
])
def test_old_protocols_and_weak_ciphers_refused(tls_stack, args):
    rc, out = _s_client(tls_stack, "-servername", "a.test", *args)
    assert rc != 0, out[-600:]
    assert not re.search(r"Cipher is (?!\(NONE\))", out), out[-600:]


def test_tls12_and_tls13_accepted(tls_stack):
    for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        rc, out = _s_client(tls_stack, "-servername", "a.test", flag)
        assert rc == 0 and want in out, out[-600:]


def test_certificate_reload_on_sighup(tls_stack, pki):
    assert _peer_cert(tls_stack, "-servername", "a.test")[1] == 200
    d = str(tls_stack.tmp / "renew")
    os.makedirs(d)
    for f in ("ca.crt", "ca.key"):
        shutil.copy(os.path.join(pki, f), d)
    _issue(d, "a.test", 201)
    shutil.copy(os.path.join(d, "a.test.crt"), str(tls_stack.tmp / "a.crt"))
    shutil.copy(os.path.join(d, "a.test.key"), str(tls_stack.tmp / "a.key"))
    tls_stack.gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _peer_cert(tls_stack, "-servername", "a.test")[1] != 201:
        assert time.monotonic() < deadline, "the renewed certificate was not served after SIGHUP"
        time.sleep(0.1)
    # A broken certificate on reload keeps the running one.
    with open(str(tls_stack.tmp / "a.crt"), "w") as f:
        f.write("not a certificate\n")
    tls_stack.gw.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert _peer_cert(tls_stack, "-servername", "a.test")[1] == 201
    assert "reload failed, keeping the running configuration: tls: cannot load certificate" in tls_stack.gw.log()
    assert tls_stack.gw.alive()


def test_validate_reports_a_bad_certificate(tls_stack, tmp_path):
    cfg = dict(tls_stack.config)
    cfg["gateway"] = dict(cfg["gateway"], tls=dict(cfg["gateway"]["tls"], key=str(tmp_path / "missing.key")))
    path = tls_stack.write_config(cfg, str(tmp_path / "bad.yaml"))
    r = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "tls: cannot load private key" in r.stderr and "missing.key" in r.stderr, r.stderr


def test_tls_listener_needs_a_default_certificate(tls_stack, tmp_path):
    cfg = dict(tls_stack.config)
    cfg["gateway"] = dict(cfg["gateway"], tls={"listen": 1})
    path = tls_stack.write_config(cfg, str(tmp_path / "nocert.yaml"))
    r = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "gateway.tls.listen needs gateway.tls.cert and gateway.tls.key" in r.stderr, r.stderr


@pytest.mark.timeout_s(300)
@pytest.mark.skipif(shutil.which("testssl.sh") is None and shutil.which("testssl") is None,
                    reason="testssl.sh is not installed (scripts/deps.sh installs it)")
def test_testssl_protocols_and_ciphers(tls_stack, pki):
    exe = shutil.which("testssl.sh") or shutil.which("testssl")
    r = subprocess.run([exe, "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1", "-p", "-f",
                        f"a.test:{tls_stack.tls_port}"], capture_output=True, text=True, timeout=280)
    out = r.stdout
    for proto in ("SSLv2", "SSLv3", "TLS 1 ", "TLS 1.1"):
        line = next((l for l in out.splitlines() if l.strip().startswith(proto)), "")
        assert "not offered" in line, f"{proto}: {line!r}\n{out[-2000:]}"
    assert re.search(r"TLS 1\.2\s+offered", out), out[-2000:]
    assert re.search(r"TLS 1\.3\s+offered", out), out[-2000:]
    assert re.search(r"PFS is offered \(OK\)", out), out[-2000:]
    assert re.search(r"ALPN/HTTP2\s+h2, http/1\.1 \(offered\)", out), out[-2000:]
    # every cipher offered has forward secrecy: the PFS list is the whole list
    pfs = out.split("PFS is offered (OK)")[1].split("Elliptic curves")[0].split()
    assert pfs and all(c.startswith(("TLS_", "ECDHE-")) for c in pfs), pfs
