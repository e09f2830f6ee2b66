"""Origin response hygiene: how the gateway frames what an origin sends
(RFC 9110 §8.6, RFC 9112 §5, §6), with a raw-socket origin that writes
exact bytes. The rules are in services/gateway/gw_origin_parse.h:
conflicting Content-Length, Transfer-Encoding other than `chunked`, and
Transfer-Encoding with Content-Length are 502s and the origin connection is
closed; token lists are matched whole."""
import socket
import threading
import time

import pytest

import harness
from harness import one_line

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

# path -> bytes the origin answers with; the connection stays open after them
SCRIPTS = {
    "/ok": OK,
    "/cl-conflict": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello world",
    "/cl-conflict-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 11\r\n\r\nhello world",
    "/cl-same": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello",
    "/cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "/cl-inner-space": b"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\nhello world",
    # 37 digits: a parser that copies a prefix of the value reads 0 here
    "/cl-long-zeros": b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 36 + b"5\r\n\r\nhello",
    "/te-notchunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: notchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/te-gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/te-twice": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n0\r\n\r\n",
    "/te-case": b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/te-http10": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/conn-xclose": b"HTTP/1.1 200 OK\r\nConnection: xclose\r\nContent-Length: 6\r\n\r\nxclose",
    "/conn-close-list": b"HTTP/1.1 200 OK\r\nConnection: foo, CLOSE\r\nContent-Length: 5\r\n\r\nclose",
    "/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 5\r\n\r\nhello",
    "/space-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "/interim-ok": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK,
    "/interim-flood": b"HTTP/1.1 100 Continue\r\n\r\n" * 50,
    "/switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    "/204-smuggle": b"HTTP/1.1 204 No Content\r\nContent-Length: 38\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    "/head-body": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
}


class RawOrigin:
    """A TCP server that answers each request head with SCRIPTS[path],
    verbatim. Records every connection: the paths it carried and whether
    the gateway closed it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.conns = []  # {"paths": [...], "closed": bool}
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = {"paths": [], "closed": False}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    b = c.recv(65536)
                    if not b:
                        rec["closed"] = True
                        return
                    buf += b
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                with self.lock:
                    rec["paths"].append(path)
                c.sendall(SCRIPTS.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        except OSError:
            rec["closed"] = True
        finally:
            c.close()

    def conn_of(self, path):
        """The last connection that carried `path`."""
        with self.lock:
            for rec in reversed(self.conns):
                if path in rec["paths"]:
                    return rec
        raise AssertionError(f"{path} never reached the origin")

    def wait_closed(self, rec, timeout=3):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rec["closed"]:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture(scope="module")
def raw_origin():
    o = RawOrigin()
    yield o
    o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, raw_origin):
    # One event-loop thread: one origin pool, so that consecutive requests
    # show which origin connection was reused.
    st = harness.Stack(
        str(tmp_path_factory.mktemp("hygiene")),
        # These tests watch the origin client itself (framing, connection
        # reuse): with the cache on, repeated paths would be hits.
        vhosts=[{"name": "raw.test", "default": True, "origin": raw_origin.url, "cache": {"enable": False}}],
        gateway={"threads": 1, "origin": {"read_timeout": "2s", "connect_timeout": "1s"}},
        workers=0,
    )
    yield st
    st.close()


def _read_response(f, method="GET"):
    """Reads one HTTP/1.1 response from a socket file: (status, headers
    with lower-case names, body)."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        assert line, "connection closed inside a response head"
        if line in (b"\r\n", b"\n"):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if method == "HEAD" or status in (204, 304):
        pass
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(n)
            f.readline()
    else:
        body = f.read()
    return status, headers, body


def _get(st, path, method="GET"):
    return st.request(method, path, host="raw.test")


def _assert_502(r, reason):
    assert r.status_code == 502, (r.status_code, r.content[:200])
    assert one_line(r.text), repr(r.text)
    assert reason in r.text, r.text


# ---- Content-Length -----------------------------------------------------------

@pytest.mark.parametrize("path", ["/cl-conflict", "/cl-conflict-list"])
def test_conflicting_content_length_is_502_and_connection_closed(stack, raw_origin, path):
    r = _get(stack, path)
    _assert_502(r, "origin sent conflicting Content-Length")
    rec = raw_origin.conn_of(path)
    assert raw_origin.wait_closed(rec), "the origin connection with conflicting lengths was kept"
    assert rec["paths"][-1] == path, rec  # nothing after it on that connection
    assert _get(stack, "/ok").text == "ok\n"


def test_identical_repeated_content_length_is_one(stack):
    r = _get(stack, "/cl-same")
    assert r.status_code == 200 and r.content == b"hello"


@pytest.mark.parametrize("path", ["/cl-plus", "/cl-inner-space"])
def test_content_length_not_plain_digits_is_502(stack, path):
    _assert_502(_get(stack, path), "origin sent a bad Content-Length")


def test_content_length_with_many_leading_zeros(stack):
    r = _get(stack, "/cl-long-zeros")
    assert r.status_code == 200 and r.content == b"hello"


# ---- Transfer-Encoding and Connection tokens ------------------------------------

def test_notchunked_is_not_chunked(stack, raw_origin):
    r = _get(stack, "/te-notchunked")
    _assert_502(r, "transfer coding the gateway cannot decode")
    assert raw_origin.wait_closed(raw_origin.conn_of("/te-notchunked"))


@pytest.mark.parametrize("path,reason", [
    ("/te-gzip-chunked", "transfer coding the gateway cannot decode"),
    ("/te-twice", "chunked more than once"),
    ("/te-http10", "Transfer-Encoding in an HTTP/1.0 response"),
])
def test_transfer_codings_other_than_chunked_are_502(stack, path, reason):
    _assert_502(_get(stack, path), reason)


def test_chunked_token_case_and_whitespace(stack):
    r = _get(stack, "/te-case")
    assert r.status_code == 200 and r.content == b"hello"


def test_content_length_with_transfer_encoding_is_502_and_connection_closed(stack, raw_origin):
    r = _get(stack, "/cl-te")
    _assert_502(r, "origin sent both Transfer-Encoding and Content-Length")
    rec = raw_origin.conn_of("/cl-te")
    assert raw_origin.wait_closed(rec)
    # what followed on that connection never became a response
    assert _get(stack, "/ok").text == "ok\n"


def test_connection_xclose_is_not_close(stack, raw_origin):
    assert _get(stack, "/conn-xclose").content == b"xclose"
    assert _get(stack, "/ok").text == "ok\n"
    rec = raw_origin.conn_of("/conn-xclose")
    assert rec["paths"][-2:] == ["/conn-xclose", "/ok"], rec
    assert not rec["closed"]


def test_connection_close_in_a_list_closes(stack, raw_origin):
    assert _get(stack, "/conn-close-list").content == b"close"
    assert raw_origin.wait_closed(raw_origin.conn_of("/conn-close-list"))


def test_chunked_connection_is_reused(stack, raw_origin):
    r = _get(stack, "/chunked")
    assert r.status_code == 200 and r.content == b"hello world"
    assert _get(stack, "/ok").text == "ok\n"
    rec = raw_origin.conn_of("/chunked")
    assert rec["paths"][-2:] == ["/chunked", "/ok"], rec


# ---- other shapes --------------------------------------------------------------

@pytest.mark.parametrize("path,reason", [
    ("/obs-fold", "obs-fold"),
    ("/space-colon", "malformed"),
    ("/switch", "101"),
])
def test_header_shapes_refused(stack, path, reason):
    _assert_502(_get(stack, path), reason)


def test_interim_responses_skipped(stack):
    r = _get(stack, "/interim-ok")
    assert r.status_code == 200 and r.text == "ok\n"


def test_interim_flood_is_502_not_a_wait(stack):
    t0 = time.monotonic()
    r = _get(stack, "/interim-flood")
    _assert_502(r, "too many interim")
    assert time.monotonic() - t0 < 1.5


def test_204_with_a_body_does_not_answer_the_next_request(stack, raw_origin):
    r = _get(stack, "/204-smuggle")
    assert r.status_code == 204 and r.content == b""
    assert _get(stack, "/ok").text == "ok\n"
    assert raw_origin.wait_closed(raw_origin.conn_of("/204-smuggle"))


def test_head_response_with_a_body_is_not_reused(stack, raw_origin):
    r = _get(stack, "/head-body", method="HEAD")
    assert r.status_code == 200 and r.headers["Content-Length"] == "4"
    assert _get(stack, "/ok").text == "ok\n"
    assert raw_origin.wait_closed(raw_origin.conn_of("/head-body"))


# ---- the client connection survives ---------------------------------------------

def test_client_connection_survives_refused_origin_responses(stack):
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        f = s.makefile("rb")
        for path, want in [("/cl-conflict", 502), ("/ok", 200), ("/te-notchunked", 502), ("/ok", 200),
                           ("/cl-te", 502), ("/chunked", 200), ("/ok", 200)]:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: raw.test\r\n\r\n".encode())
            status, headers, body = _read_response(f)
            assert status == want, (path, status, body)
            if want == 502:
                assert one_line(body.decode()), body
            elif path == "/ok":
                assert body == b"ok\n"
            else:
                assert body == b"hello world"
