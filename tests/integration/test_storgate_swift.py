"""A Swift-backed mount (an aws_s3 endpoint on OpenStack Swift's s3api,
started from Debian's packages by scripts/swift-aio.sh) read and written
by the storgate scheduler: a batch lists the Swift bucket through
ListObjectsV2, copies and transforms its objects into a local mount and
deletes them from Swift; another batch writes local files into Swift, a
large one as a multipart upload; the S3 API serves the Swift mount's
objects (GET, HEAD, Range, PUT, DELETE, copies), listings and multipart
uploads into it, and refuses a part copied from it with a clear error."""
import hashlib
import os
import signal
import socket
import threading
import urllib.parse

import pytest

import harness
import swift as swift_aio
from test_storgate import _drop, _tree, _wait

pytestmark = pytest.mark.skipif(not swift_aio.installed(), reason="OpenStack Swift is not installed")


@pytest.fixture(scope="module")
def sw(tmp_path_factory):
    s = swift_aio.Swift(str(tmp_path_factory.mktemp("swift")))
    s.start()
    s.client().create_bucket(Bucket="refract", CreateBucketConfiguration={"LocationConstraint": s.region})
    yield s
    s.stop()


def _config(sw, local, out, batches, workflows):
    return {
        "credentials": [{"access_key": "AK", "secret_key": "SK"}],
        "aws_s3": [{"name": "swiftstore", "endpoint": sw.s3_endpoint, "region": sw.region,
                    "access_key": sw.access_key, "secret_key": sw.secret_key, "bucket": "refract",
                    "path_style": True}],
        "buckets": [{"meta": {"name": "mixed"},
                     "mounts": [{"mountPoint": "/local", "originPath": local},
                                {"mountPoint": "/swift", "originPath": "swiftstore@aws_s3/landing"},
                                {"mountPoint": "/out", "originPath": out, "expose": False}],
                     "events": {"onBatch": batches},
                     "workflows": workflows}],
    }


class _Recorder:
    """An HTTP forwarder between the gateway and Swift that records each
    request (method, path, Range header, status): what the gateway asked
    of the endpoint. The Host header goes through unchanged, so SigV4
    signatures still verify."""

    def __init__(self, target):
        import http.client
        import http.server
        host, port = target.split("//", 1)[1].rstrip("/").split(":")
        self.seen = []
        self.if_match = []
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection(host, int(port), timeout=60)
                c.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    c.putheader(k, v)
                c.endheaders(body)
                r = c.getresponse()
                data = r.read()
                rec.seen.append((self.command, self.path, self.headers.get("Range"), r.status))
                rec.if_match.append(self.headers.get("If-Match"))
                self.send_response(r.status)
                head = self.command == "HEAD"  # its Content-Length is the object's: kept
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                c.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_swift_mount_read_and_written(make_stack, tmp_path, sw, media):
    """Objects put straight into Swift under landing/ are listed by a batch
    over /swift (the mount's skip path hides "landing/"), copied and
    WebP-transformed (by an image worker, from the downloaded object) into
    the local /out, then deleted from Swift; local files, one of 70 MiB,
    are written into Swift under landing/up/ byte-exact (the big one as a
    multipart upload, no upload left behind); the S3 API serves the Swift
    mount (objects, listings, copies, multipart uploads, parts copied from
    it)."""
    local, out = str(tmp_path / "local"), str(tmp_path / "out")
    os.makedirs(local)
    os.makedirs(out)
    s3 = sw.client()
    put = {}
    for i in range(3):
        body = harness.pattern_bytes(5000 + i, seed=i + 7)
        s3.put_object(Bucket="refract", Key=f"landing/in/f{i}.bin", Body=body)
        put[f"in/f{i}.bin"] = hashlib.sha256(body).hexdigest()
    photo = open(media["photo.jpg"], "rb").read()
    s3.put_object(Bucket="refract", Key="landing/pics/p.jpg", Body=photo)
    s3.put_object(Bucket="refract", Key="elsewhere/not-mine.bin", Body=b"x")  # outside the skip path
    batches = [
        {"enable": True, "path": "/swift/in", "schedule": "0 0 1 1 *", "trigger": {"workflow": "fetch"}},
        {"enable": True, "path": "/swift/pics", "schedule": "0 0 1 1 *", "trigger": {"workflow": "webp"}},
        {"enable": True, "path": "/local", "schedule": "0 0 1 1 *", "trigger": {"workflow": "upload"}},
    ]
    workflows = [
        {"name": "fetch", "tasks": [{"function": None, "savePath": "/out/{{ item.path | relpath('/swift') }}"}],
         "onComplete": {"src": {"op": "delete"}}},
        {"name": "webp", "tasks": [{"function": "/dims/format/webp/resize/200",
                                    "savePath": "/out/{{ item.filename | rsplit('.', 1)[0] }}.webp"}]},
        {"name": "upload", "tasks": [{"function": None, "savePath": "/swift/up/{{ item.path | relpath('/local') }}"}]},
    ]
    big = os.path.join(local, "big.bin")
    with open(big, "wb") as f:
        for i in range(70):
            f.write(harness.pattern_bytes(1 << 20, seed=100 + i))
    small = _drop(local, 2, nested=True)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + local}], workers=1,
                    storgate=_config(sw, local, out, batches, workflows), scheduler_bus=True)
    s = st.add_scheduler(jobs=2)
    s.signal(signal.SIGUSR1)
    _wait(lambda: len(_tree(os.path.join(out, "in"))) == 3, 60, "the copies from Swift\n" + s.log())
    assert {os.path.join("in", k): v for k, v in _tree(os.path.join(out, "in")).items()} == put
    _wait(lambda: os.path.exists(os.path.join(out, "p.webp")), 60, "the WebP from Swift\n" + s.log())
    info = harness.image_info(open(os.path.join(out, "p.webp"), "rb").read(), str(tmp_path), "w")
    assert info["loader"].startswith("webpload") and info["width"] == 200
    # fetched objects were deleted from Swift; the others stay
    _wait(lambda: "Contents" not in s3.list_objects_v2(Bucket="refract", Prefix="landing/in/"), 30,
          "the deletes in Swift")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="refract")["Contents"]}
    assert "landing/pics/p.jpg" in keys and "elsewhere/not-mine.bin" in keys
    # local files went up into Swift, byte-exact
    want = {"up/big.bin": hashlib.sha256(open(big, "rb").read()).hexdigest()}
    want.update({"up/" + k: v for k, v in small.items()})

    def uploaded():
        got = {}
        for o in s3.list_objects_v2(Bucket="refract", Prefix="landing/up/").get("Contents", []):
            got[o["Key"][len("landing/"):]] = o
        return got

    _wait(lambda: set(uploaded()) == set(want), 120, "the uploads into Swift\n" + s.log())
    for k, v in want.items():
        body = s3.get_object(Bucket="refract", Key="landing/" + k)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == v, k
    assert uploaded()["up/big.bin"]["ETag"].strip('"').endswith("-5")  # 70 MiB in 16 MiB parts
    assert s3.list_multipart_uploads(Bucket="refract").get("Uploads", []) == []
    # the S3 API serves the Swift mount's objects (GET, HEAD, Range, PUT,
    # DELETE), its blocking calls on the gateway's storage threads
    import botocore.exceptions
    from test_storgate import _s3
    api = _s3(st)
    body = harness.pattern_bytes(3 << 20, seed=77)
    api.put_object(Bucket="mixed", Key="swift/api/x.bin", Body=body, ContentType="application/x-test")
    stored = s3.get_object(Bucket="refract", Key="landing/api/x.bin")
    assert stored["Body"].read() == body and stored["ContentType"] == "application/x-test"
    # listings take the Swift mount in, merged in key order with the local one
    lst = api.list_objects_v2(Bucket="mixed", Prefix="swift/api/")
    assert [o["Key"] for o in lst["Contents"]] == ["swift/api/x.bin"] and lst["Contents"][0]["Size"] == len(body)
    top = api.list_objects_v2(Bucket="mixed", Delimiter="/")
    assert {p["Prefix"] for p in top.get("CommonPrefixes", [])} >= {"local/", "swift/"}, top
    keys = [o["Key"] for page in api.get_paginator("list_objects_v2").paginate(Bucket="mixed", PaginationConfig={"PageSize": 2})
            for o in page.get("Contents", [])]
    assert keys == sorted(keys) and "swift/api/x.bin" in keys and "swift/pics/p.jpg" in keys, keys
    got = api.get_object(Bucket="mixed", Key="swift/api/x.bin")
    assert got["Body"].read() == body
    h = api.head_object(Bucket="mixed", Key="swift/api/x.bin")
    assert h["ContentLength"] == len(body) and h["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    part = api.get_object(Bucket="mixed", Key="swift/api/x.bin", Range="bytes=1000-1999")
    assert part["Body"].read() == body[1000:2000] and part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    tail = api.get_object(Bucket="mixed", Key="swift/api/x.bin", Range="bytes=-100")
    assert tail["Body"].read() == body[-100:] and tail["ContentRange"] == f"bytes {len(body) - 100}-{len(body) - 1}/{len(body)}"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        api.get_object(Bucket="mixed", Key="swift/api/x.bin", Range=f"bytes={len(body)}-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"
    api.delete_object(Bucket="mixed", Key="swift/api/x.bin")
    assert "Contents" not in s3.list_objects_v2(Bucket="refract", Prefix="landing/api/")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        api.get_object(Bucket="mixed", Key="swift/api/x.bin")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    api.delete_object(Bucket="mixed", Key="swift/api/never.bin")  # 204, as S3 answers for a missing key
    # copies into, out of and within the Swift mount
    api.put_object(Bucket="mixed", Key="swift/api/src.bin", Body=body[:5000], ContentType="text/x-src")
    api.copy_object(Bucket="mixed", Key="local/copied.bin", CopySource={"Bucket": "mixed", "Key": "swift/api/src.bin"})
    assert open(os.path.join(local, "copied.bin"), "rb").read() == body[:5000]
    assert api.head_object(Bucket="mixed", Key="local/copied.bin")["ContentType"] == "text/x-src"
    api.copy_object(Bucket="mixed", Key="swift/api/back.bin", CopySource={"Bucket": "mixed", "Key": "local/copied.bin"})
    api.copy_object(Bucket="mixed", Key="swift/api/twice.bin", CopySource={"Bucket": "mixed", "Key": "swift/api/back.bin"})
    assert s3.get_object(Bucket="refract", Key="landing/api/twice.bin")["Body"].read() == body[:5000]
    with pytest.raises(botocore.exceptions.ClientError) as e:  # the source's conditions hold across the download
        api.copy_object(Bucket="mixed", Key="local/never.bin", CopySource={"Bucket": "mixed", "Key": "swift/api/src.bin"},
                        CopySourceIfMatch='"0123"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    # multipart uploads into the Swift mount: parts staged on the gateway, the object uploaded
    # to Swift at completion (itself in 8 MiB parts there), no upload left behind
    import boto3.s3.transfer
    import io
    big = harness.pattern_bytes(13 << 20, seed=78)
    api.upload_fileobj(io.BytesIO(big), "mixed", "swift/api/mpu.bin",
                       Config=boto3.s3.transfer.TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20),
                       ExtraArgs={"ContentType": "video/x-test"})
    stored = s3.get_object(Bucket="refract", Key="landing/api/mpu.bin")
    assert stored["Body"].read() == big and stored["ContentType"] == "video/x-test"
    assert api.get_object(Bucket="mixed", Key="swift/api/mpu.bin")["Body"].read() == big
    assert api.list_multipart_uploads(Bucket="mixed").get("Uploads", []) == []
    # an upload listed, its parts listed, then aborted: nothing reaches Swift
    up = api.create_multipart_upload(Bucket="mixed", Key="swift/api/aborted.bin")["UploadId"]
    api.upload_part(Bucket="mixed", Key="swift/api/aborted.bin", UploadId=up, PartNumber=1, Body=big[:1000])
    assert [u["Key"] for u in api.list_multipart_uploads(Bucket="mixed")["Uploads"]] == ["swift/api/aborted.bin"]
    assert [p["Size"] for p in api.list_parts(Bucket="mixed", Key="swift/api/aborted.bin", UploadId=up)["Parts"]] == [1000]
    api.abort_multipart_upload(Bucket="mixed", Key="swift/api/aborted.bin", UploadId=up)
    assert api.list_multipart_uploads(Bucket="mixed").get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket="refract", Prefix="landing/api/aborted")
    # a part too small (not the last) is refused at completion, and the upload stays
    up = api.create_multipart_upload(Bucket="mixed", Key="swift/api/small.bin")["UploadId"]
    e1 = api.upload_part(Bucket="mixed", Key="swift/api/small.bin", UploadId=up, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = api.upload_part(Bucket="mixed", Key="swift/api/small.bin", UploadId=up, PartNumber=2, Body=b"b" * 100)["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        api.complete_multipart_upload(Bucket="mixed", Key="swift/api/small.bin", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert e.value.response["Error"]["Code"] == "EntityTooSmall"
    api.abort_multipart_upload(Bucket="mixed", Key="swift/api/small.bin", UploadId=up)
    # parts copied from the Swift mount (downloaded off the loop), with a range and a source
    # condition, into a local object and into the Swift mount itself
    for dest in ("local/mpu-copy.bin", "swift/api/mpu-copy.bin"):
        up = api.create_multipart_upload(Bucket="mixed", Key=dest)["UploadId"]
        src = {"Bucket": "mixed", "Key": "swift/api/mpu.bin"}
        p1 = api.upload_part_copy(Bucket="mixed", Key=dest, UploadId=up, PartNumber=1, CopySource=src,
                                  CopySourceRange=f"bytes=0-{(5 << 20) - 1}")["CopyPartResult"]["ETag"]
        p2 = api.upload_part_copy(Bucket="mixed", Key=dest, UploadId=up, PartNumber=2, CopySource=src,
                                  CopySourceRange=f"bytes={8 << 20}-{(9 << 20) - 1}")["CopyPartResult"]["ETag"]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            api.upload_part_copy(Bucket="mixed", Key=dest, UploadId=up, PartNumber=3, CopySource=src,
                                 CopySourceIfMatch='"0123"')
        assert e.value.response["Error"]["Code"] == "PreconditionFailed"
        api.complete_multipart_upload(Bucket="mixed", Key=dest, UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
        assert api.get_object(Bucket="mixed", Key=dest)["Body"].read() == big[:5 << 20] + big[8 << 20:9 << 20]
    assert open(os.path.join(local, "mpu-copy.bin"), "rb").read() == big[:5 << 20] + big[8 << 20:9 << 20]


def test_swift_mount_get_streams_ranges(make_stack, tmp_path, sw):
    """A GET from an S3-backed mount asks the endpoint for the metadata
    (HEAD), then for the bytes in chunks of 256 KiB, 1 MiB, 4 MiB, then up
    to 8 MiB (ranged GETs on condition of the HEAD's ETag), one chunk ahead
    of what is sent; a client's
    Range asks only for that range. An object replaced in the endpoint
    while a slow client reads cuts the answer short: never a mix."""
    local, out = str(tmp_path / "local"), str(tmp_path / "out")
    os.makedirs(local)
    os.makedirs(out)
    body = harness.pattern_bytes(10 << 20, seed=5)
    swift = sw.client()
    swift.put_object(Bucket="refract", Key="landing/rng/x.bin", Body=body)
    etag = swift.head_object(Bucket="refract", Key="landing/rng/x.bin")["ETag"]
    rec = _Recorder(sw.s3_endpoint)
    try:
        cfg = _config(sw, local, out, [], [])
        cfg["aws_s3"][0]["endpoint"] = rec.url
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + local}], workers=0, storgate=cfg)
        from test_storgate import _s3
        api = _s3(st)

        def asked():
            got = [(m, rg, s) for m, p, rg, s in rec.seen if p.startswith("/refract/landing/rng/x.bin")]
            rec.seen.clear()
            return got

        part = api.get_object(Bucket="mixed", Key="swift/rng/x.bin", Range="bytes=1000000-1000999")
        assert part["Body"].read() == body[1000000:1001000]
        assert part["ContentRange"] == f"bytes 1000000-1000999/{len(body)}"
        assert asked() == [("HEAD", None, 200), ("GET", "bytes=1000000-1000999", 206)]
        tail = api.get_object(Bucket="mixed", Key="swift/rng/x.bin", Range="bytes=-10")
        assert tail["Body"].read() == body[-10:]
        assert asked()[-1] == ("GET", f"bytes={len(body) - 10}-{len(body) - 1}", 206)
        assert api.get_object(Bucket="mixed", Key="swift/rng/x.bin")["Body"].read() == body
        # a small first chunk (the first byte soon), each next one four times larger, up to 8 MiB
        ends = [256 << 10, (256 << 10) + (1 << 20), (256 << 10) + (5 << 20), len(body)]
        assert asked() == [("HEAD", None, 200)] + [("GET", f"bytes={a}-{b - 1}", 206) for a, b in zip([0] + ends, ends)]
        assert set(rec.if_match[-4:]) == {etag}, rec.if_match[-4:]
        # replaced while a client reads slowly (a small receive buffer, so
        # that the gateway cannot have sent far ahead): the answer is cut short
        big = harness.pattern_bytes(40 << 20, seed=6)
        swift.put_object(Bucket="refract", Key="landing/rng/y.bin", Body=big)
        url = urllib.parse.urlsplit(api.generate_presigned_url(
            "get_object", Params={"Bucket": "mixed", "Key": "swift/rng/y.bin"}, ExpiresIn=600))
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.settimeout(30)
        c.connect((url.hostname, url.port))
        c.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(65536)
        head, first = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(big)}".encode() in head.lower(), head
        swift.put_object(Bucket="refract", Key="landing/rng/y.bin", Body=harness.pattern_bytes(40 << 20, seed=7))
        whole = first
        try:
            while len(whole) < len(big):
                b = c.recv(1 << 20)
                if not b:
                    break
                whole += b
        except OSError:
            pass  # the connection cut short: what a client sees of a failed answer
        c.close()
        assert len(whole) < len(big), "a mix of two objects was served as one"
        assert whole == big[:len(whole)]  # what came is the first object's, unmixed
        assert "cut short at byte" in st.gw.log() and "changed in the endpoint" in st.gw.log()
    finally:
        rec.close()


def test_swift_root_mount(make_stack, tmp_path, sw):
    """A bucket whose root (mountPoint null) is an S3-backed mount: every
    key without a mount point of its own is an object in Swift under the
    skip path; a hidden local mount beside it keeps its keys (a Swift
    object under that name is not listed); PUT, GET, ranged GET, listings
    with a delimiter, copy and DELETE go to Swift; a batch over the root
    copies the Swift objects to the local mount. A second root mount
    beside an S3-backed one is refused when the configuration loads."""
    import subprocess
    local = str(tmp_path / "out")
    os.makedirs(local)
    swift = sw.client()
    swift.put_object(Bucket="refract", Key="rootp/pre/a.bin", Body=b"from swift")
    swift.put_object(Bucket="refract", Key="rootp/out/hidden.bin", Body=b"shadowed")  # under /out: not the root's
    cfg = {
        "credentials": [{"access_key": "AK", "secret_key": "SK"}],
        "aws_s3": [{"name": "swiftstore", "endpoint": sw.s3_endpoint, "region": sw.region,
                    "access_key": sw.access_key, "secret_key": sw.secret_key, "bucket": "refract",
                    "path_style": True}],
        "buckets": [{"meta": {"name": "rooted"},
                     "mounts": [{"mountPoint": None, "originPath": "swiftstore@aws_s3/rootp"},
                                {"mountPoint": "/out", "originPath": local}],
                     "events": {"onBatch": [{"enable": True, "path": "/pre", "schedule": "0 0 1 1 *",
                                             "trigger": {"workflow": "fetch"}}]},
                     "workflows": [{"name": "fetch", "tasks": [
                         {"function": None, "savePath": "/out/{{ item.path | relpath('/pre') }}"}]}]}],
    }
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + local}], workers=0, storgate=cfg)
    from test_storgate import _s3
    api = _s3(st)
    body = harness.pattern_bytes(300000, seed=9)
    api.put_object(Bucket="rooted", Key="docs/x.bin", Body=body)
    assert swift.get_object(Bucket="refract", Key="rootp/docs/x.bin")["Body"].read() == body
    assert api.get_object(Bucket="rooted", Key="docs/x.bin")["Body"].read() == body
    assert api.get_object(Bucket="rooted", Key="docs/x.bin", Range="bytes=10-19")["Body"].read() == body[10:20]
    assert api.get_object(Bucket="rooted", Key="pre/a.bin")["Body"].read() == b"from swift"
    api.copy_object(Bucket="rooted", Key="docs/y.bin", CopySource={"Bucket": "rooted", "Key": "docs/x.bin"})
    api.put_object(Bucket="rooted", Key="out/local.txt", Body=b"local")
    assert open(os.path.join(local, "local.txt"), "rb").read() == b"local"
    keys = [o["Key"] for o in api.list_objects_v2(Bucket="rooted")["Contents"]]
    assert keys == ["docs/x.bin", "docs/y.bin", "out/local.txt", "pre/a.bin"], keys
    top = api.list_objects_v2(Bucket="rooted", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["docs/", "out/", "pre/"], top
    page = api.list_objects_v2(Bucket="rooted", Prefix="docs/", MaxKeys=1)
    assert [o["Key"] for o in page["Contents"]] == ["docs/x.bin"] and page["IsTruncated"]
    rest = api.list_objects_v2(Bucket="rooted", Prefix="docs/", ContinuationToken=page["NextContinuationToken"])
    assert [o["Key"] for o in rest["Contents"]] == ["docs/y.bin"]
    api.delete_object(Bucket="rooted", Key="docs/y.bin")
    assert "Contents" not in swift.list_objects_v2(Bucket="refract", Prefix="rootp/docs/y")
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: os.path.exists(os.path.join(local, "a.bin")), 30, "the batch over the root\n" + s.log())
    assert open(os.path.join(local, "a.bin"), "rb").read() == b"from swift"
    # a local root mount beside the S3-backed one: refused with the reason
    cfg["buckets"][0]["mounts"].append({"originPath": local})
    path = st.write_config(dict(st.config, storgate=dict(st.config["storgate"], buckets=cfg["buckets"])),
                           str(tmp_path / "two-roots.yaml"))
    r = subprocess.run([harness.SCHEDULER_BIN, "-t", "-c", path], capture_output=True, text=True)
    assert r.returncode == 1 and "must be the bucket's only root mount" in r.stderr, r.stderr


def test_swift_lease_refused_it_cannot_fence(make_stack, tmp_path, sw):
    """OpenStack Swift 2.30's s3api has no conditional writes (a PUT with
    If-None-Match is a 501), so a lease object there could not fence a
    deposed leader: a scheduler given one probes at start and refuses to
    start, naming the reason, and leaves no probe object behind."""
    local, out = str(tmp_path / "local"), str(tmp_path / "out")
    os.makedirs(local)
    os.makedirs(out)
    sg = _config(sw, local, out, [], [])
    sg["distribution"] = {"leader": {"url": sw.s3_endpoint.rstrip("/") + "/refract/leases/{vhost}.lease",
                                     "authEndpoint": "swiftstore"}}
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + local}], workers=0, storgate=sg)
    s = st.add_scheduler(name="A", wait=False)
    s.expected_exit = True
    _wait(lambda: not s.alive(), 20, "the scheduler to refuse to start\n" + s.log())
    assert "has no conditional writes (conditional PUT answered 501 NotImplemented), so it cannot fence a lease" \
        in s.log(), s.log()
    left = sw.client().list_objects_v2(Bucket="refract", Prefix="leases/").get("Contents", [])
    assert left == [], left
