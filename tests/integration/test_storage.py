"""The object-storage tier (a vhost's `storage:`, seed 002 Appendix C) and
the backup pipe (`backup:`, seed 002 chapter 5) against OpenStack Swift's
s3api, started from Debian's packages (scripts/swift-aio.sh).

Storage MISS: made (origin or worker), served, and uploaded while it is
served; storage HIT on a gateway with an empty cache: served from S3
byte-exact with no origin request and no worker, and cached; a purge
deletes the stored copies; a fill that breaks off midway leaves nothing in
S3, nor does a gateway killed mid-upload; the backup pipe copies the
origin's stream byte-exact under the path it was asked by."""
import hashlib
import os
import time
import urllib.parse

import pytest

import harness
import swift as swift_aio
from harness import http

pytestmark = pytest.mark.skipif(not swift_aio.installed(), reason="OpenStack Swift is not installed")

TOKEN = "t0ken-for-tests"
BUCKET = "tier"


@pytest.fixture(scope="module")
def sw(tmp_path_factory):
    s = swift_aio.Swift(str(tmp_path_factory.mktemp("swift")))
    s.start()
    s.client().create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": s.region})
    yield s
    s.stop()


def _module(sw):
    """The seed's aws_s3-backup module string for the Swift bucket."""
    return (f"aws_access_key={sw.access_key};aws_secret_key = {sw.secret_key};bucket={BUCKET};"
            f"s3_url={sw.s3_endpoint};region={sw.region};")


def _keys(sw, prefix):
    out = []
    for page in sw.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def _wait(cond, secs, what):
    end = time.time() + secs
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _uploads(st, vhost, kind="storage", result="ok"):
    return st.metric("refract_storage_uploads_total", vhost=vhost, kind=kind, result=result) or 0


def _stack(make_stack, sw, origin, prefix, workers=1, cdn_purge=None, events=None):
    vh = {"name": "t.test", "default": True, "origin": origin.url,
          "cache": {"enable": True, "override_origin": True, "ttl": {"res2xx": "1h"}},
          "storage": {"s3": "swiftstore", "prefix": prefix}}
    if cdn_purge:
        vh["storage"]["cdn_purge"] = cdn_purge
    if events:
        vh["storage"]["events"] = events
    storgate = {"aws_s3": [{"name": "swiftstore", "endpoint": sw.s3_endpoint, "region": sw.region,
                            "access_key": sw.access_key, "secret_key": sw.secret_key, "bucket": BUCKET}]}
    return make_stack([vh], workers=workers, gateway={"admin_token": TOKEN}, storgate=storgate)


def _origin_hits(origin, path):
    return sum(1 for r in origin.requests if r["path"].startswith(path))


def test_miss_uploads_then_a_new_gateway_hits(make_stack, sw, origin, media, tmp_path):
    """A resize and a plain file, each asked once through a gateway: storage
    misses, made and uploaded. A second gateway with an empty cache and no
    image worker answers both from S3 (Cache-Status detail=storage-hit),
    byte-exact, without asking the origin; its next answer is a cache hit."""
    a = _stack(make_stack, sw, origin, "t1/")
    urls = ["/photo.jpg/dims/resize/120x", "/photo.jpg"]
    first = {}
    for u in urls:
        r = a.get(u, host="t.test")
        assert r.status_code == 200, (u, r.text)
        assert "storage-hit" not in r.headers["Cache-Status"], r.headers["Cache-Status"]
        first[u] = r.content
    _wait(lambda: _uploads(a, "t.test") >= 2, 30, "two uploads\n" + a.gw.log())
    assert a.metric("refract_storage_lookups_total", vhost="t.test", result="miss") == 2
    keys = _keys(sw, "t1/")
    assert len(keys) == 2, keys
    # the URL rides along as metadata, for people reading the bucket
    metas = {sw.client().head_object(Bucket=BUCKET, Key=k)["Metadata"].get("refract-url") for k in keys}
    assert metas == set(urls), metas

    b = _stack(make_stack, sw, origin, "t1/", workers=0)
    before = _origin_hits(origin, "/photo.jpg")
    for u in urls:
        r = b.get(u, host="t.test")
        assert r.status_code == 200, (u, r.text, b.gw.log())
        assert "detail=storage-hit" in r.headers["Cache-Status"], r.headers["Cache-Status"]
        assert r.content == first[u], u
        if u.endswith("120x"):
            assert r.headers["Content-Type"] == "image/jpeg"
        r2 = b.get(u, host="t.test")
        assert r2.headers["Cache-Status"].startswith("refract; hit"), r2.headers["Cache-Status"]
        assert r2.content == first[u]
    assert _origin_hits(origin, "/photo.jpg") == before
    assert b.metric("refract_storage_lookups_total", vhost="t.test", result="hit") == 2
    assert b.metric("refract_cache_requests_total", vhost="t.test", result="storage-hit") == 2


class _CdnHook:
    """A CDN's purge endpoint: records the JSON bodies POSTed to it."""

    def __init__(self):
        import http.server
        import json
        import threading
        got = self.got = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
                self.server.headers.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.headers = self.headers = []
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/purge"

    def close(self):
        self.srv.shutdown()


def test_purge_deletes_the_stored_copies(make_stack, sw, origin):
    """A URL purge deletes the stored object and every function result made
    from it, then calls the CDN's purge webhook; the next gateway misses and
    uploads again."""
    cdn = _CdnHook()
    a = _stack(make_stack, sw, origin, "t2/", cdn_purge=cdn.url)
    for u in ["/photo.jpg", "/photo.jpg/dims/resize/60x", "/photo.jpg/dims/resize/70x", "/alpha.png"]:
        assert a.get(u, host="t.test").status_code == 200
    _wait(lambda: len(_keys(sw, "t2/")) == 4, 30, "four stored copies")
    r = http("POST", a.admin("/purge?url=" + urllib.parse.quote("http://t.test/photo.jpg", safe="")),
             headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0].get("storage") == "deleting", r.text
    _wait(lambda: len(_keys(sw, "t2/")) == 1, 30, "the purge in S3\n" + a.gw.log())
    assert a.metric("refract_storage_deletes_total", vhost="t.test", result="ok") == 3
    _wait(lambda: cdn.got, 10, "the CDN purge webhook")
    assert cdn.got == [("/purge", "application/json", {"vhost": "t.test", "urls": ["http://t.test/photo.jpg"]})]
    assert a.metric("refract_storage_cdn_purges_total", vhost="t.test", result="ok") == 1
    cdn.close()
    b = _stack(make_stack, sw, origin, "t2/")
    r = b.get("/photo.jpg/dims/resize/60x", host="t.test")
    assert "storage-hit" not in r.headers["Cache-Status"]
    assert "detail=storage-hit" in b.get("/alpha.png", host="t.test").headers["Cache-Status"]


def test_a_broken_fill_leaves_nothing(make_stack, sw, origin):
    """An origin that closes mid-body (12 MiB of 20 MiB: past the first
    8 MiB part) leaves no object and no upload in progress in S3."""
    a = _stack(make_stack, sw, origin, "t3/")
    r = a.get("/_cut?size=20971520&sent=12582912", host="t.test")
    assert r.status_code == 200  # the head went out; the body broke off
    _wait(lambda: _uploads(a, "t.test", result="failed") == 1, 30, "the aborted upload\n" + a.gw.log())
    assert _keys(sw, "t3/") == []
    ups = sw.client().list_multipart_uploads(Bucket=BUCKET, Prefix="t3/").get("Uploads", [])
    assert ups == [], ups


def test_kill_mid_upload_leaves_no_object(make_stack, sw, origin):
    """kill -9 while a 16 MiB object streams from a slow origin into the
    cache and S3: no object appears in S3 (a multipart upload never
    completed is invisible)."""
    a = _stack(make_stack, sw, origin, "t4/")
    import threading
    t = threading.Thread(target=lambda: a.get("/_slow?size=16777216&secs=6", host="t.test", timeout=30),
                         daemon=True)
    t.start()
    _wait(lambda: (a.metric("refract_cache_fill_bytes_total", vhost="t.test") or 0) > 9 << 20, 20,
          "the first part's bytes")
    a.gw.kill9()
    time.sleep(1)
    assert _keys(sw, "t4/") == []


def test_backup_pipe_copies_the_stream(make_stack, sw, origin, media):
    """backup: the seed's module string. A 3 MiB object read by a slow
    client lands in S3 at PREFIX + path, byte-exact, from the one origin
    read, while that client has read only a third of it; a fill that breaks
    off leaves nothing."""
    st = make_stack([{"name": "b.test", "default": True, "origin": origin.url, "cache": {"enable": True, "override_origin": True, "ttl": {"res2xx": "1h"}},
                      "backup": {"s3": _module(sw), "prefix": "mirror/"}}], workers=0)
    before = _origin_hits(origin, "/_slow")
    # the client reads 64 KiB every 50 ms (about 1.3 MB/s): the copy to S3
    # follows the origin, not this reader, and is complete before it is
    r = st.get("/_slow?size=3145728&secs=1", host="b.test", stream=True)
    assert r.status_code == 200
    got, uploaded_before_read = b"", None
    for chunk in r.iter_content(65536):
        got += chunk
        if uploaded_before_read is None and len(got) >= 1 << 20:
            uploaded_before_read = _wait(lambda: _uploads(st, "b.test", kind="backup") == 1, 10, "the backup")
        time.sleep(0.05)
    assert len(got) == 3145728 and uploaded_before_read
    body = sw.client().get_object(Bucket=BUCKET, Key="mirror/_slow")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(got).hexdigest()
    assert _origin_hits(origin, "/_slow") == before + 1
    r = st.get("/_cut?size=2000000&sent=1000000", host="b.test")
    _wait(lambda: _uploads(st, "b.test", kind="backup", result="failed") == 1, 30, "the failed backup")
    assert "mirror/_cut" not in _keys(sw, "mirror/")


def test_config_refuses_unknown_endpoint(tmp_path):
    """storage.s3 must name an aws_s3 endpoint (or be a module string)."""
    p = tmp_path / "c.yaml"
    p.write_text("bus: {endpoint: 'tcp://127.0.0.1:1'}\n"
                 "vhosts:\n  - {name: a, origin: 'http://127.0.0.1:1', cache: {enable: true},"
                 " storage: {s3: nowhere}}\n")
    import subprocess
    out = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert "storage.s3 'nowhere' is not an endpoint of storgate.aws_s3" in out.stderr + out.stdout, out.stderr
    p.write_text("bus: {endpoint: 'tcp://127.0.0.1:1'}\n"
                 "vhosts:\n  - {name: a, origin: 'http://127.0.0.1:1', cache: {enable: true},"
                 " backup: 'aws_access_key=a;bucket=b;s3_url=http://x;'}\n")
    out = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0 and "aws_access_key and aws_secret_key go together" in out.stderr + out.stdout


def test_admin_prewarm(make_stack, sw, origin):
    """POST /prewarm on the admin port (issue 10 part 5: pre-warming on one
    machine without Kafka): each URL goes through the gateway like a client's
    GET, the answer lists each one's status and Cache-Status, the result is
    uploaded to the tier, and the next client gets a hit."""
    a = _stack(make_stack, sw, origin, "t6/")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http("GET", a.admin("/prewarm"), headers=auth).status_code == 405
    assert http("POST", a.admin("/prewarm?url=http://t.test/photo.jpg")).status_code == 401
    assert http("POST", a.admin("/prewarm"), headers=auth).status_code == 400
    body = "http://t.test/photo.jpg/dims/resize/90x\nnot-a-url\nhttp://t.test/photo.jpg/dims/resize/*\n"
    r = http("POST", a.admin("/prewarm?url=" + urllib.parse.quote("http://t.test/photo.jpg?v=1", safe="")),
             headers=auth, data=body, timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["url"] for x in res] == ["http://t.test/photo.jpg?v=1", "http://t.test/photo.jpg/dims/resize/90x",
                                       "not-a-url", "http://t.test/photo.jpg/dims/resize/*"]
    assert res[0]["status"] == 200 and "fwd=miss" in res[0]["cache_status"] and res[0]["bytes"] > 100000, res
    assert res[1]["status"] == 200 and "stored" in res[1]["cache_status"], res
    assert res[2]["error"], res  # the purge API's URL check: the same reason
    assert res[3]["error"] == "a pre-warm names one URL, not a pattern"
    assert a.metric("refract_admin_prewarms_total", result="ok") == 2
    _wait(lambda: _uploads(a, "t.test") >= 2, 30, "the uploads of the pre-warmed objects")
    r = a.get("/photo.jpg/dims/resize/90x", host="t.test")
    assert r.headers["Cache-Status"].startswith("refract; hit"), r.headers["Cache-Status"]
    assert res[1]["request_id"] in a.gw.log()


def test_upload_events_reach_the_outbox_while_the_scheduler_is_down(make_stack, sw, origin):
    """storage.events: each upload's completion (or failure) event is left
    for storgate's persistent outbox, so it is delivered even though no
    scheduler runs when the upload ends: one starts later, takes the files
    and delivers each once, with the idempotency key."""
    hook = _CdnHook()
    a = _stack(make_stack, sw, origin, "t7/", events=hook.url)
    assert a.get("/photo.jpg/dims/resize/80x", host="t.test").status_code == 200
    assert a.get("/_cut?size=20971520&sent=12582912", host="t.test").status_code == 200
    _wait(lambda: _uploads(a, "t.test") == 1 and _uploads(a, "t.test", result="failed") == 1, 30, "the uploads")
    inbox = os.path.join(a.config["storgate_scheduler"]["state_dir"], "outbox-in")
    _wait(lambda: len([f for f in os.listdir(inbox) if f.endswith(".json")]) == 2, 10, "two events waiting")
    time.sleep(0.5)
    assert hook.got == []  # nobody delivers them yet
    a.add_scheduler()
    _wait(lambda: len(hook.got) == 2, 30, "the two events delivered\n" + a.schedulers[0].log())
    ev = {g[2]["event"]: g[2] for g in hook.got}
    done, failed = ev["storage.upload.completed"], ev["storage.upload.failed"]
    assert done["url"] == "/photo.jpg/dims/resize/80x" and done["kind"] == "storage" and done["bucket"] == BUCKET
    assert done["key"] in _keys(sw, "t7/") and done["bytes"] > 0
    assert failed["url"].startswith("/_cut") and failed["error"], failed
    assert sorted(h["Idempotency-Key"] for h in hook.headers) == sorted([done["id"], failed["id"]])
    assert [f for f in os.listdir(inbox) if f.endswith(".json")] == []
    hook.close()
