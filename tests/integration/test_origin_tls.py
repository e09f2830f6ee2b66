"""https:// origins and origin name resolution.

A CA, server and client certificates are made with the openssl CLI once per
module. The https origin is harness.OriginHandler behind Python's ssl: it
records the SNI it was asked for, the client certificate it got, and every
TCP connection it accepted. Name-resolution tests point a name at 127.0.0.1
and then 127.0.0.2 through /etc/hosts (glibc reads it again on every lookup)
and always put the file back.
"""
import json
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness

HOSTS = "/etc/hosts"


# ------------------------------------------------------------------ PKI ---

def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d, ca, name, san, usage):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        if san:
            f.write(f"subjectAltName={san}\n")
        f.write(f"extendedKeyUsage={usage}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    _ca(d, "ca")
    _ca(d, "other-ca")
    _leaf(d, "ca", "origin", "DNS:origin.test,DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "other-ca", "stranger", "DNS:origin.test,DNS:localhost,IP:127.0.0.1", "serverAuth")
    _leaf(d, "ca", "refract-gateway", "", "clientAuth")
    return {k: os.path.join(d, k) for k in os.listdir(d)}


# --------------------------------------------------------- https origin ---

class _TlsHandler(harness.OriginHandler):
    def setup(self):
        super().setup()
        # The handshake runs here, on the connection's own thread, so a
        # client that never finishes it holds up nobody else.
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            with self.server.lock:
                self.server.handshake_errors.append(str(e))
            raise
        finally:
            self.request.settimeout(None)

    def _dispatch(self, body):
        if self.path == "/_whoami":
            self._record(body)
            cert = self.request.getpeercert() or {}
            cn = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
            out = json.dumps({"client_cn": cn[0] if cn else None, "version": self.request.version()}).encode()
            return self._send(200, out, "application/json")
        return super()._dispatch(body)

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError):
            pass


class _TlsServer(harness.ThreadingHTTPServer):
    request_queue_size = 64
    daemon_threads = True

    def get_request(self):
        sock, addr = self.socket.accept()
        with self.lock:
            self.connections += 1
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # failed handshakes are the point of some tests


class TlsOrigin(harness.Origin):
    """harness.OriginHandler over TLS on host:port (a free port by default)."""

    def __init__(self, root, cert, key, host="127.0.0.1", port=None, client_ca=None, max_version=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        if max_version:
            ctx.maximum_version = max_version
        self.snis = []
        ctx.sni_callback = lambda sslobj, name, c: self.snis.append(name) and None
        self.port = port or harness.free_port()
        httpd = _TlsServer((host, self.port), _TlsHandler)
        httpd.ctx = ctx
        httpd.handshake_errors = []
        httpd.connections = 0
        self.host = host
        self._serve(httpd, root)

    @property
    def url(self):
        return f"https://{self.host}:{self.port}"

    @property
    def connections(self):
        with self.httpd.lock:
            return self.httpd.connections


class PlainOrigin(harness.Origin):
    """harness.Origin on a chosen address and port."""

    def __init__(self, root, host, port):
        self.host, self.port = host, port
        self._serve(harness._OriginServer((host, port), harness.OriginHandler), root)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"


@pytest.fixture
def tls_origin(media, pki):
    made = []

    def make(**kw):
        kw.setdefault("cert", pki["origin.crt"])
        kw.setdefault("key", pki["origin.key"])
        o = TlsOrigin(media["dir"], **kw)
        made.append(o)
        return o

    yield make
    for o in made:
        o.close()


def _vhost(url, **origin_tls):
    # The origin client is under test: every request must reach the origin.
    v = {"name": "localhost", "default": True, "origin": url, "dims": {"status": "off"}, "cache": {"enable": False}}
    if origin_tls:
        v["origin_tls"] = origin_tls
    return v


def _stack(make_stack, vhost, threads=2, **origin_opts):
    return make_stack([vhost], workers=0, gateway={"threads": threads, "origin": origin_opts})


def _file_bytes(media, name):
    with open(os.path.join(media["dir"], name), "rb") as f:
        return f.read()


def _a_media_file(media):
    names = sorted(n for n in os.listdir(media["dir"]) if os.path.isfile(os.path.join(media["dir"], n)))
    return max(names, key=lambda n: os.path.getsize(os.path.join(media["dir"], n)))


# --------------------------------------------------------------- https ---

def test_https_get_and_stream_byte_exact(make_stack, tls_origin, pki, media):
    o = tls_origin()
    # By name: localhost is looked up asynchronously, SNI and the checked
    # name are "localhost".
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"]))
    name = _a_media_file(media)
    r = st.get(f"/{name}")
    assert r.status_code == 200, r.text
    assert r.content == _file_bytes(media, name)
    assert o.snis and set(o.snis) == {"localhost"}
    # Chunked, 5 MiB: well past the 512 KiB stream window, so origin reads
    # pause and resume on the TLS connection.
    r = st.get("/_chunked?n=80&size=65536")
    assert r.status_code == 200
    assert harness.sha256(r.content) == harness.sha256(harness.pattern_bytes(80 * 65536))
    # Streamed as it arrives: the first bytes long before the last.
    t0 = time.monotonic()
    with harness.session() as s:
        with s.get(st.url("/_slow?size=1000000&secs=2"), stream=True, timeout=15) as r:
            assert r.status_code == 200
            it = r.iter_content(65536)
            first = next(it)
            t_first = time.monotonic() - t0
            body = first + b"".join(it)
            t_all = time.monotonic() - t0
    assert body == harness.pattern_bytes(1000000)
    assert t_first < 1.0 and t_all > 1.5, (t_first, t_all)
    # The origin saw the origin's own Host (default port 443 is not it).
    r = st.get("/_echo")
    assert json.loads(r.content)["headers"]["host"] == f"localhost:{o.port}"


def test_https_concurrent_first_requests_wait_for_the_lookup(make_stack, tls_origin, pki):
    o = tls_origin()
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"]))
    out = []

    def one():
        out.append(st.get("/_chunked?n=4&size=1000").status_code)

    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [200] * 8


def test_https_keepalive_reuses_connections(make_stack, tls_origin, pki):
    o = tls_origin()
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"]), threads=1)
    for i in range(10):
        r = st.get(f"/_status/200?i={i}")
        assert r.status_code == 200
    assert len(o.requests) == 10
    assert o.connections == 1, f"{o.connections} TLS connections for 10 sequential requests"


def test_https_untrusted_ca_is_502_with_reason(make_stack, tls_origin, pki):
    o = tls_origin(cert=pki["stranger.crt"], key=pki["stranger.key"])
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"]))
    r = st.get("/anything")
    assert r.status_code == 502
    assert harness.one_line(r.text), r.text
    assert r.text.startswith(f"origin localhost:{o.port} TLS: certificate verify failed: "), r.text
    assert "unable to get local issuer certificate" in r.text
    assert o.requests == []
    assert st.metric("refract_origin_errors_total", vhost="localhost", reason="tls") == 1


def test_https_default_trust_is_the_system_bundle(make_stack, tls_origin):
    # Our test CA is not in the system bundle: verification must fail,
    # not pass for want of a ca_file.
    o = tls_origin()
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}"))
    r = st.get("/x")
    assert r.status_code == 502
    assert r.text.startswith(f"origin localhost:{o.port} TLS: certificate verify failed: "), r.text


def test_https_wrong_name_is_502_with_reason(make_stack, tls_origin, pki):
    o = tls_origin()
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"], sni="wrong.test"))
    r = st.get("/x")
    assert r.status_code == 502
    assert harness.one_line(r.text)
    assert r.text.startswith(f"origin localhost:{o.port} TLS: certificate verify failed: hostname mismatch"), r.text
    assert o.snis == ["wrong.test"]
    assert o.requests == []


def test_https_verify_false_is_an_explicit_opt_out(make_stack, tls_origin, pki):
    o = tls_origin(cert=pki["stranger.crt"], key=pki["stranger.key"])
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", verify=False, sni="whatever.test"))
    r = st.get("/_status/200")
    assert r.status_code == 200
    assert o.snis == ["whatever.test"]


def test_https_sni_names_and_address_origins(make_stack, tls_origin, pki):
    o = tls_origin()
    # An address origin with a configured name: that name is sent and checked.
    st = _stack(make_stack, _vhost(f"https://127.0.0.1:{o.port}", ca_file=pki["ca.crt"], sni="origin.test"))
    r = st.get("/_status/200")
    assert r.status_code == 200, r.text
    assert o.snis == ["origin.test"]
    # The Host header keeps the origin's own host:port.
    headers = {k.lower(): v for k, v in o.requests[-1]["headers"].items()}
    assert headers["host"] == f"127.0.0.1:{o.port}"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_https_address_origin_checked_against_ip_san(make_stack, tls_origin, pki, version):
    # No sni: the certificate must name the address (IP SAN). With TLS 1.2
    # h2o also runs its own DNS-only name check after the handshake, which
    # must not turn OpenSSL's accepted IP match into a failure.
    o = tls_origin(max_version=version)
    st = _stack(make_stack, _vhost(f"https://127.0.0.1:{o.port}", ca_file=pki["ca.crt"]))
    r = st.get("/_whoami")
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["version"] == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[
        version]
    # The wrong address for the certificate fails: 127.0.0.2 is not in it.
    o2 = tls_origin(host="127.0.0.2", max_version=version)
    st2 = _stack(make_stack, _vhost(f"https://127.0.0.2:{o2.port}", ca_file=pki["ca.crt"]))
    r = st2.get("/x")
    assert r.status_code == 502
    assert "certificate verify failed: IP address mismatch" in r.text, r.text


def test_https_mutual_tls(make_stack, tls_origin, pki):
    o = tls_origin(client_ca=pki["ca.crt"])
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"],
                                   client_cert=pki["refract-gateway.crt"], client_key=pki["refract-gateway.key"]))
    r = st.get("/_whoami")
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["client_cn"] == "refract-gateway"
    # Without a client certificate the origin refuses the connection.
    st2 = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"]))
    r = st2.get("/_whoami")
    assert r.status_code == 502
    assert harness.one_line(r.text)
    assert len(o.requests) == 1


def test_https_bad_client_key_file_is_502(make_stack, tls_origin, pki, tmp_path):
    o = tls_origin()
    st = _stack(make_stack, _vhost(f"https://localhost:{o.port}", ca_file=pki["ca.crt"],
                                   client_cert=pki["refract-gateway.crt"], client_key=str(tmp_path / "missing.key")))
    r = st.get("/x")
    assert r.status_code == 502
    assert harness.one_line(r.text)
    assert "TLS: cannot load client_key" in r.text, r.text


def test_https_handshake_is_bounded_by_connect_timeout(make_stack):
    # Accepts TCP and then says nothing: the handshake never completes.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    try:
        port = srv.getsockname()[1]
        st = _stack(make_stack, _vhost(f"https://127.0.0.1:{port}"), connect_timeout="1s")
        t0 = time.monotonic()
        r = st.get("/x")
        assert r.status_code == 504
        assert r.text == "origin connect timed out\n"
        assert time.monotonic() - t0 < 4
    finally:
        srv.close()


# ---------------------------------------------------------------- names ---

class _Hosts:
    """Adds lines to /etc/hosts and puts the file back as it was."""

    def __init__(self):
        with open(HOSTS) as f:
            self.orig = f.read()

    def set(self, name, addr):
        text = self.orig if self.orig.endswith("\n") or not self.orig else self.orig + "\n"
        with open(HOSTS, "w") as f:  # in place: /etc/hosts may be a mount point
            f.write(text + f"{addr} {name}\n")

    def restore(self):
        with open(HOSTS, "w") as f:
            f.write(self.orig)


@pytest.fixture
def hosts():
    if not os.access(HOSTS, os.W_OK):
        pytest.skip("needs a writable /etc/hosts")
    h = _Hosts()
    try:
        yield h
    finally:
        h.restore()


def _served_by(a, b, before_a, before_b):
    return len(a.requests) - before_a, len(b.requests) - before_b


@pytest.mark.timeout_s(60)
def test_origin_name_is_followed_when_its_address_changes(make_stack, media, hosts):
    name = f"moving-origin-{os.getpid()}.refract.test"
    port = harness.free_port()
    a = PlainOrigin(media["dir"], "127.0.0.1", port)
    b = PlainOrigin(media["dir"], "127.0.0.2", port)
    try:
        hosts.set(name, "127.0.0.1")
        st = _stack(make_stack, _vhost(f"http://{name}:{port}"), threads=1, resolve_ttl="1s")
        for _ in range(3):
            assert st.get("/_status/200").status_code == 200
        assert len(a.requests) == 3 and len(b.requests) == 0
        hosts.set(name, "127.0.0.2")
        # Within the TTL the old address is still used.
        assert st.get("/_status/200").status_code == 200
        assert len(b.requests) == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(b.requests) == 0:
            assert st.get("/_status/200").status_code == 200
            time.sleep(0.2)
        assert len(b.requests) > 0, "the new address was never used"
        # From then on only the new address: kept-alive connections to the
        # old one are not reused.
        na = len(a.requests)
        for _ in range(5):
            assert st.get("/_status/200").status_code == 200
        assert len(a.requests) == na
        assert "now resolves to 127.0.0.2" in st.gw.log()
    finally:
        a.close()
        b.close()


def test_unresolvable_name_is_502_and_not_remembered(make_stack, media, hosts):
    name = f"late-origin-{os.getpid()}.refract.test"
    port = harness.free_port()
    a = PlainOrigin(media["dir"], "127.0.0.1", port)
    try:
        st = _stack(make_stack, _vhost(f"http://{name}:{port}"), threads=1)
        r = st.get("/_status/200")
        assert r.status_code == 502
        assert harness.one_line(r.text)
        assert r.text.startswith(f"origin host name does not resolve: {name}:{port}"), r.text
        assert st.metric("refract_origin_errors_total", vhost="localhost", reason="resolve") == 1
        # The failure is not cached: once the name exists, it is used.
        hosts.set(name, "127.0.0.1")
        r = st.get("/_status/200")
        assert r.status_code == 200, r.text
        assert len(a.requests) == 1
    finally:
        a.close()


def test_validate_loads_origin_tls_files(tmp_path):
    """refract-gateway -t loads what a start would: an origin_tls file that
    cannot be read fails validation, naming the vhost and the file."""
    path = str(tmp_path / "t.yaml")
    with open(path, "w") as f:
        f.write('gateway: { listen: 8080 }\nbus: { endpoint: "tcp://127.0.0.1:5555" }\nvhosts:\n'
                '  - name: a.test\n    origin: "https://a.test"\n'
                f'    origin_tls: {{ ca_file: {tmp_path}/missing-ca.pem }}\n')
    r = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", path], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}: vhost 'a.test': origin TLS: cannot load ca_file '{tmp_path}/missing-ca.pem'"), r.stderr
