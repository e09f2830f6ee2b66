"""storgate's S3 API (storgate.listen) driven by real S3 clients: awscli
2.9, boto3 1.26 / botocore 1.29, s3cmd 2.3 and rclone 1.60 (Debian's, by
absolute path), plus raw requests signed by a SigV4 implementation written
here from AWS's documented formulas — a second, independent one, so that a
mistake shared by the server's verifier and botocore would still show.

One gateway serves the whole module (the tests do not interfere: each works
under its own key prefix or bucket). Buckets:
  photos  a root mount plus a hidden mount at /hidden (expose: false)
  locked  access.put and access.delete disabled
  dropbox access.get disabled
  many    2500 files placed on disk before the gateway starts (paging)
Every assertion decodes and compares bytes, keys or XML; a status alone is
never taken as proof.
"""
import base64
import binascii
import datetime
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

import harness

AK, SK = "AKSTORGATETEST", "s3cr3t/with+odd=chars"
REGION = "ap-northeast-2"
AWS = "/usr/bin/aws"
S3CMD = "/usr/bin/s3cmd"
RCLONE = "/usr/bin/rclone"
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MIB = 1 << 20


# ------------------------------------------------------------------ SigV4 ---
# Written from AWS's "Signature Version 4 signing process" and "Signature
# calculations for the Authorization header: transferring payload in
# multiple chunks" pages, not from botocore or the server.

def _hmac(key, msg):
    return hmac.new(key, msg if isinstance(msg, bytes) else msg.encode(), hashlib.sha256).digest()


def _signing_key(secret, date):
    k = _hmac(("AWS4" + secret).encode(), date)
    for part in (REGION, "s3", "aws4_request"):
        k = _hmac(k, part)
    return k


def _uri_enc(b):
    """RFC 3986 encoding: unreserved characters kept, every other byte %XX."""
    return urllib.parse.quote_from_bytes(b, safe="-_.~")


def _canon_path(path):
    # S3: each segment decoded and encoded once more; '/' kept (an encoded
    # slash stays encoded: the split is on literal slashes only).
    return "/".join(_uri_enc(urllib.parse.unquote_to_bytes(s)) for s in path.split("/"))


def _canon_query(query, drop=()):
    items = []
    for it in query.split("&"):
        if not it:
            continue
        n, _, v = it.partition("=")
        if urllib.parse.unquote(n) in drop:
            continue
        items.append((_uri_enc(urllib.parse.unquote_to_bytes(n)), _uri_enc(urllib.parse.unquote_to_bytes(v))))
    return "&".join(f"{n}={v}" for n, v in sorted(items))


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def sign_headers(method, target, headers, payload_hash, secret=SK, when=None):
    """Header-signs a request whose headers (a dict of lower-case names,
    host included) are all sent and all signed. Adds x-amz-date,
    x-amz-content-sha256 and authorization. Returns (signature, amz_date,
    signing key, scope) — what aws-chunked signatures chain from."""
    amz_date = (when or _now()).strftime("%Y%m%dT%H%M%SZ")
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    path, _, query = target.partition("?")
    names = sorted(headers)
    canon_headers = "".join(f"{n}:{' '.join(str(headers[n]).split())}\n" for n in names)
    canon = "\n".join([method, _canon_path(path), _canon_query(query), canon_headers, ";".join(names), payload_hash])
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canon.encode()).hexdigest()])
    key = _signing_key(secret, amz_date[:8])
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={';'.join(names)}, "
                                f"Signature={sig}")
    return sig, amz_date, key, scope


def presign(port, method, path, expires, when=None, secret=SK):
    """A presigned URL (query authentication, host the only signed header)."""
    amz_date = (when or _now()).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    q = [("X-Amz-Algorithm", "AWS4-HMAC-SHA256"), ("X-Amz-Credential", f"{AK}/{scope}"), ("X-Amz-Date", amz_date),
         ("X-Amz-Expires", str(expires)), ("X-Amz-SignedHeaders", "host")]
    query = "&".join(f"{_uri_enc(k.encode())}={_uri_enc(v.encode())}" for k, v in q)
    canon = "\n".join([method, _canon_path(path), _canon_query(query), f"host:127.0.0.1:{port}\n", "host",
                       "UNSIGNED-PAYLOAD"])
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canon.encode()).hexdigest()])
    sig = hmac.new(_signing_key(secret, amz_date[:8]), sts.encode(), hashlib.sha256).hexdigest()
    return f"http://127.0.0.1:{port}{path}?{query}&X-Amz-Signature={sig}"


def chunk_signed_body(data, chunk, seed, key, amz_date, scope, corrupt=False):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD framing: each chunk signed over
    the previous signature; corrupt flips a data byte of the second chunk
    after signing (its signature then no longer matches)."""
    out, prev = [], seed
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for i, p in enumerate(pieces):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                         hashlib.sha256(p).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        if corrupt and i == 1:
            p = bytes([p[0] ^ 1]) + p[1:]
        out.append(f"{len(p):x};chunk-signature={prev}\r\n".encode() + p + b"\r\n")
    return b"".join(out)


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def b64_be32(v):
    """A CRC as S3 writes it: base64 of its 4 big-endian bytes."""
    return base64.b64encode(v.to_bytes(4, "big")).decode()


def multipart_etag(data, part):
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, "-N"."""
    parts = [data[i:i + part] for i in range(0, len(data), part)]
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


def xml_error(body):
    """(Code, Message) of an S3 <Error> document; fails on anything else."""
    root = ET.fromstring(body)
    assert root.tag == "Error", body[:300]
    return root.findtext("Code"), root.findtext("Message")


# ---------------------------------------------------------------- fixture ---

class S3Env:
    """The module's gateway, its directories and configured clients."""

    def __init__(self, base):
        self.base = base
        d = self.dirs = {n: os.path.join(base, n) for n in
                         ("site", "photos", "hidden", "outside", "locked", "dropbox", "many", "clients",
                          "merged-a", "merged-b", "merged-img")}
        for p in d.values():
            os.makedirs(p, exist_ok=True)
        self.many_keys = _fill_many(d["many"])
        self.merged_keys = _fill_merged(d["merged-a"], d["merged-b"], d["merged-img"])
        with open(os.path.join(d["locked"], "keep.txt"), "wb") as f:
            f.write(b"locked but readable\n")
        with open(os.path.join(d["dropbox"], "in.txt"), "wb") as f:
            f.write(b"write only\n")
        sg = {
            "credentials": [{"access_key": AK, "secret_key": SK}],
            "buckets": [
                {"meta": {"name": "photos"},
                 "mounts": [{"originPath": d["photos"]},
                            {"mountPoint": "/hidden", "originPath": d["hidden"], "expose": False}]},
                {"meta": {"name": "locked"}, "mounts": [{"originPath": d["locked"]}],
                 "access": {"put": {"enable": False}, "delete": {"enable": False}}},
                {"meta": {"name": "dropbox"}, "mounts": [{"originPath": d["dropbox"]}],
                 "access": {"get": {"enable": False}}},
                {"meta": {"name": "many"}, "mounts": [{"originPath": d["many"]}]},
                {"meta": {"name": "merged"},
                 "mounts": [{"originPath": d["merged-a"]}, {"originPath": d["merged-b"]},
                            {"mountPoint": "/img", "originPath": d["merged-img"]}]},
            ],
        }
        self.stack = harness.Stack(os.path.join(base, "stack"),
                                   [{"name": "a.test", "default": True, "origin": "file://" + d["site"]}],
                                   workers=0, storgate=sg)
        self.port = self.stack.s3_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._client_configs()

    def _client_configs(self):
        c = self.dirs["clients"]
        self.aws_config = os.path.join(c, "aws.config")
        with open(self.aws_config, "w") as f:
            f.write("[default]\nregion = ap-northeast-2\ns3 =\n  addressing_style = path\n"
                    "  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n")
        self.s3cfg = os.path.join(c, "s3cfg")
        with open(self.s3cfg, "w") as f:
            f.write(f"[default]\naccess_key = {AK}\nsecret_key = {SK}\nhost_base = 127.0.0.1:{self.port}\n"
                    f"host_bucket = 127.0.0.1:{self.port}\nuse_https = False\nsignature_v2 = False\n"
                    f"bucket_location = {REGION}\n")
        self.rclone_conf = os.path.join(c, "rclone.conf")
        with open(self.rclone_conf, "w") as f:
            f.write(f"[sg]\ntype = s3\nprovider = Other\naccess_key_id = {AK}\nsecret_access_key = {SK}\n"
                    f"endpoint = {self.endpoint}\nregion = {REGION}\nforce_path_style = true\n")
        # The clients see none of the user's settings (AWS_CA_BUNDLE is set on
        # this machine, and rclone refuses it over http).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "RCLONE_")) and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        env.update(HOME=c, AWS_CONFIG_FILE=self.aws_config, AWS_SHARED_CREDENTIALS_FILE="/dev/null",
                   AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_DEFAULT_REGION=REGION,
                   AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        self.env = env

    # -- clients
    def aws(self, *args, check=True, timeout=120):
        p = subprocess.run([AWS, "--endpoint-url", self.endpoint, *args], env=self.env, capture_output=True,
                           timeout=timeout)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stderr.decode(errors="replace")[-3000:])
        return p

    def aws_json(self, *args):
        return json.loads(self.aws(*args, "--output", "json").stdout or b"{}")

    def s3cmd(self, *args, check=True):
        p = subprocess.run([S3CMD, "-c", self.s3cfg, "--no-progress", *args], env=self.env, capture_output=True,
                           timeout=120)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stdout.decode()[-2000:], p.stderr.decode()[-2000:])
        return p

    def rclone(self, *args, check=True):
        p = subprocess.run([RCLONE, "--config", self.rclone_conf, "--retries", "1", "--low-level-retries", "1",
                            *args], env=self.env, capture_output=True, timeout=120)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stdout.decode()[-2000:], p.stderr.decode()[-3000:])
        return p

    def boto(self, secret=SK, access_key=AK):
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret,
                                        region_name=REGION)
        return session.client("s3", endpoint_url=self.endpoint,
                              config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                            retries={"max_attempts": 1, "mode": "standard"},
                                            max_pool_connections=8))

    def raw(self, method, target, body=b"", headers=None, sign=True, payload=None, secret=SK, when=None):
        """One request sent exactly as given (no client normalises the
        target), header-signed here unless sign is False. (status,
        lower-cased headers, body)."""
        h = {"host": f"127.0.0.1:{self.port}"}
        if method in ("PUT", "POST") or body:
            h["content-length"] = str(len(body))  # signed, as s3cmd and rclone do
        h.update(headers or {})
        if sign:
            sign_headers(method, target, h, payload or hashlib.sha256(body).hexdigest(), secret, when)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in h.items():
                conn.putheader(k, v)
            conn.endheaders(body or None)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def metric(self, op, status):
        return harness.metric_value(self.stack.metrics(), "refract_s3_requests_total", op=op, status=str(status)) or 0

    def path(self, bucket_dir, key=""):
        return os.path.join(self.dirs[bucket_dir], key)


def _fill_many(d):
    """2500 files for the paging tests, with names whose directory order
    differs from key order ("x-1" < "x/…" < "x0": '-' < '/' < '0')."""
    keys = [f"d{i:02d}/f{j:03d}.txt" for i in range(24) for j in range(100)]
    keys += [f"top{j:02d}" for j in range(95)]
    keys += ["x-1", "x.txt", "x0", "x/y", "x/z/w"]
    for k in keys:
        p = os.path.join(d, k)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(k.encode())
    assert len(keys) == 2500
    return sorted(keys)


def _fill_merged(a, b, img):
    """Two root mounts and one at /img: keys interleave between the root
    mounts (even numbers in a, odd in b), one key is in both (a's wins), and
    b's own "img/" directory is shadowed by the /img mount."""
    files = {}
    for i in range(120):
        files[(a if i % 2 == 0 else b, f"p{i:03d}")] = b"p%d" % i
    files.update({(a, "both.txt"): b"from a", (b, "both.txt"): b"from b", (a, "dir/a1"): b"a1",
                  (b, "dir/b1"): b"b1", (b, "img/shadowed"): b"shadowed", (img, "c1"): b"c1",
                  (img, "sub/c2"): b"c2", (b, "zz"): b"zz"})
    for (root, rel), data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    keys = {rel for (root, rel) in files if root != img and not rel.startswith("img/")}
    keys |= {"img/c1", "img/sub/c2"}
    return sorted(keys)


@pytest.fixture(scope="module")
def sg(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        # boto3 in this process: no user configuration either
        for k in list(os.environ):
            if k.startswith("AWS_"):
                mp.delenv(k)
        mp.setenv("AWS_CONFIG_FILE", "/dev/null")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env = S3Env(str(tmp_path_factory.mktemp("s3")))
        try:
            yield env
        finally:
            env.stack.close()


@pytest.fixture(autouse=True)
def _gateway_survives(request):
    """A crash is blamed on the test that caused it, not on the next one."""
    yield
    if "sg" in request.fixturenames:
        st = request.getfixturevalue("sg").stack
        assert st.gw.alive(), f"the gateway died during this test:\n{st.gw.log()[-5000:]}"


def _reserved_clean(mount_dir):
    """What a mount's .refract-s3 holds besides empty tmp/ and uploads/."""
    res = os.path.join(mount_dir, ".refract-s3")
    left = []
    for dp, dns, fns in os.walk(res):
        rel = os.path.relpath(dp, res)
        left += [os.path.join(rel, n) for n in fns]
        if rel not in (".", "tmp", "uploads"):
            left.append(rel + "/")
    return left


# ----------------------------------------------------------------- awscli ---

def test_aws_ls_put_get_small(sg, tmp_path):
    """awscli lists the configured buckets (and not a disabled one), and a
    small object goes up and comes back byte for byte, with the MD5 of its
    bytes as ETag (head-object) and the file on disk under the mount."""
    out = sg.aws("s3", "ls").stdout.decode()
    names = sorted(line.split()[-1] for line in out.splitlines())
    assert names == ["dropbox", "locked", "many", "merged", "photos"], out
    src = tmp_path / "small.bin"
    data = harness.pattern_bytes(1234, seed=7)
    src.write_bytes(data)
    sg.aws("s3", "cp", "--only-show-errors", str(src), "s3://photos/aws-small/one.bin")
    assert open(sg.path("photos", "aws-small/one.bin"), "rb").read() == data
    back = tmp_path / "back.bin"
    sg.aws("s3", "cp", "--only-show-errors", "s3://photos/aws-small/one.bin", str(back))
    assert back.read_bytes() == data
    head = sg.aws_json("s3api", "head-object", "--bucket", "photos", "--key", "aws-small/one.bin")
    assert head["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert head["ContentLength"] == len(data)


@pytest.mark.timeout_s(120)
def test_aws_30mb_multipart_up_ranged_down(sg, tmp_path):
    """A 30 MiB file: awscli uploads it multipart (8 MiB parts: the ETag is
    the MD5 of the parts' MD5s, "-4") and downloads it with ranged GETs
    (206s counted by the server); both directions are byte-exact, and no
    upload is left behind."""
    data = os.urandom(30 * MIB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    parts_before = sg.metric("UploadPart", 200)
    sg.aws("s3", "cp", "--only-show-errors", str(src), "s3://photos/aws-big/big.bin")
    assert sg.metric("UploadPart", 200) - parts_before == 4
    head = sg.aws_json("s3api", "head-object", "--bucket", "photos", "--key", "aws-big/big.bin")
    assert head["ETag"] == '"%s"' % multipart_etag(data, 8 * MIB)
    assert head["ContentLength"] == len(data)
    ranged_before = sg.metric("GetObject", 206)
    back = tmp_path / "back.bin"
    sg.aws("s3", "cp", "--only-show-errors", "s3://photos/aws-big/big.bin", str(back))
    assert sg.metric("GetObject", 206) - ranged_before >= 4
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert _reserved_clean(sg.dirs["photos"]) == []
    ups = sg.aws_json("s3api", "list-multipart-uploads", "--bucket", "photos")
    assert not ups.get("Uploads"), ups


@pytest.mark.timeout_s(120)
def test_aws_list_recursive_and_paging_2500(sg):
    """2500 keys: `s3 ls --recursive` shows each once; list-objects-v2 with
    --page-size 300 --max-items 1000 continued with --starting-token yields
    every key exactly once, in S3's byte order (including "x-1" < "x.txt" <
    "x/y" < "x0", where directory order differs), over several server
    pages (continuation tokens)."""
    out = sg.aws("s3", "ls", "--recursive", "s3://many").stdout.decode()
    keys = [line.split(None, 3)[3] for line in out.splitlines()]
    assert sorted(keys) == sg.many_keys and len(keys) == 2500
    pages_before = sg.metric("ListObjectsV2", 200)
    got, token, calls = [], None, 0
    while True:
        args = ["s3api", "list-objects-v2", "--bucket", "many", "--page-size", "300", "--max-items", "1000"]
        if token:
            args += ["--starting-token", token]
        page = sg.aws_json(*args)
        got += [c["Key"] for c in page.get("Contents", [])]
        calls += 1
        token = page.get("NextToken")
        if not token:
            break
        assert calls < 5
    assert calls == 3
    assert got == sg.many_keys  # every key once, in order
    assert sg.metric("ListObjectsV2", 200) - pages_before >= 9  # 2500 / 300, plus the re-read at each token


def test_aws_delimiter_common_prefixes(sg):
    """--delimiter / gives the top-level keys and one CommonPrefix per
    directory, each exactly once even when a page ends on a prefix (page
    size 7 makes the continuation token land on prefixes); a prefix plus
    delimiter lists one level of a directory."""
    r = sg.aws_json("s3api", "list-objects-v2", "--bucket", "many", "--delimiter", "/", "--page-size", "7")
    prefixes = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    assert prefixes == [f"d{i:02d}/" for i in range(24)] + ["x/"]
    top = [c["Key"] for c in r.get("Contents", [])]
    assert top == sorted(k for k in sg.many_keys if "/" not in k)
    r = sg.aws_json("s3api", "list-objects-v2", "--bucket", "many", "--delimiter", "/", "--prefix", "x/")
    assert [c["Key"] for c in r.get("Contents", [])] == ["x/y"]
    assert [p["Prefix"] for p in r.get("CommonPrefixes", [])] == ["x/z/"]
    r = sg.aws_json("s3api", "list-objects-v2", "--bucket", "many", "--prefix", "d07/f05")
    assert [c["Key"] for c in r["Contents"]] == [f"d07/f05{j}.txt" for j in range(10)]


def test_aws_range_and_conditionals(sg, tmp_path):
    """get-object --range bytes=10-19 writes exactly those 10 bytes and
    reports the Content-Range; over plain HTTP (a presigned URL) the same
    range is a 206, If-None-Match with the ETag a 304 without body, and
    If-Match with another ETag a 412."""
    data = bytes(range(256)) * 4
    src = tmp_path / "r.bin"
    src.write_bytes(data)
    sg.aws("s3", "cp", "--only-show-errors", str(src), "s3://photos/aws-range/r.bin")
    out = tmp_path / "part.bin"
    meta = sg.aws_json("s3api", "get-object", "--bucket", "photos", "--key", "aws-range/r.bin", "--range",
                       "bytes=10-19", str(out))
    assert out.read_bytes() == data[10:20]
    assert meta["ContentRange"] == f"bytes 10-19/{len(data)}" and meta["ContentLength"] == 10
    url = sg.aws("s3", "presign", "s3://photos/aws-range/r.bin").stdout.decode().strip()
    s = harness.session()
    r = s.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = s.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert r.status_code == 206 and r.content == data[-5:]
    etag = '"%s"' % hashlib.md5(data).hexdigest()
    r = s.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    r = s.get(url, headers={"If-None-Match": '"0123"'}, timeout=10)
    assert r.status_code == 200 and r.content == data
    r = s.get(url, headers={"If-Match": '"0123"'}, timeout=10)
    assert r.status_code == 412 and xml_error(r.content)[0] == "PreconditionFailed"
    r = s.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=10)
    assert r.status_code == 416 and xml_error(r.content)[0] == "InvalidRange"


def _conditional(client, headers):
    """boto3 1.26 has no IfNoneMatch/IfMatch on PutObject: the headers go
    in before signing, as newer SDKs send them."""
    def add(request, **_):
        for k, v in headers.items():
            request.headers[k] = v
    client.meta.events.register("before-sign.s3.PutObject", add)
    return client


def test_boto3_conditional_writes(sg):
    """S3's conditional writes (2024): If-None-Match: * creates only where
    no object is (412 PreconditionFailed otherwise); If-Match: "ETAG"
    replaces only that object (412 on another ETag, 404 NoSuchKey when
    there is none); If-None-Match with an ETag is a 501, and so is either on
    CompleteMultipartUpload (refused, not ignored). Eight clients
    racing to create one key: exactly one wins. Eight clients incrementing
    a counter by compare-and-swap: no update is lost (the count equals the
    successful writes)."""
    import botocore.exceptions
    key = "cond/k.txt"

    def code(fn):
        try:
            fn()
        except botocore.exceptions.ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
        return 200, None

    create = _conditional(sg.boto(), {"If-None-Match": "*"})
    r = create.put_object(Bucket="photos", Key=key, Body=b"one")
    etag1 = r["ETag"]
    assert etag1 == '"%s"' % hashlib.md5(b"one").hexdigest()
    assert code(lambda: create.put_object(Bucket="photos", Key=key, Body=b"two")) == (412, "PreconditionFailed")
    assert sg.boto().get_object(Bucket="photos", Key=key)["Body"].read() == b"one"
    swap = _conditional(sg.boto(), {"If-Match": etag1})
    etag2 = swap.put_object(Bucket="photos", Key=key, Body=b"two")["ETag"]
    assert code(lambda: swap.put_object(Bucket="photos", Key=key, Body=b"three")) == (412, "PreconditionFailed")
    assert sg.boto().get_object(Bucket="photos", Key=key)["Body"].read() == b"two"
    assert code(lambda: _conditional(sg.boto(), {"If-Match": etag2}).put_object(
        Bucket="photos", Key="cond/none.txt", Body=b"x")) == (404, "NoSuchKey")
    assert code(lambda: _conditional(sg.boto(), {"If-None-Match": etag2}).put_object(
        Bucket="photos", Key=key, Body=b"x")) == (501, "NotImplemented")
    # a multipart upload's completion does not take them: refused, not ignored
    mpu = sg.boto()
    up = mpu.create_multipart_upload(Bucket="photos", Key="cond/mpu.bin")["UploadId"]
    part = mpu.upload_part(Bucket="photos", Key="cond/mpu.bin", UploadId=up, PartNumber=1, Body=b"p")
    cond = {"If-None-Match": "*"}
    mpu.meta.events.register("before-sign.s3.CompleteMultipartUpload",
                             lambda request, **_: request.headers.__setitem__("If-None-Match", cond["If-None-Match"]))
    assert code(lambda: mpu.complete_multipart_upload(
        Bucket="photos", Key="cond/mpu.bin", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})) == (501, "NotImplemented")
    mpu.abort_multipart_upload(Bucket="photos", Key="cond/mpu.bin", UploadId=up)

    def race_create(i, out):
        out[i] = code(lambda: _conditional(sg.boto(), {"If-None-Match": "*"}).put_object(
            Bucket="photos", Key="cond/race.txt", Body=b"%d" % i))
    out = [None] * 8
    threads = [threading.Thread(target=race_create, args=(i, out)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c for c, _ in out) == [200] + [412] * 7, out
    winner = out.index((200, None))
    assert sg.boto().get_object(Bucket="photos", Key="cond/race.txt")["Body"].read() == b"%d" % winner

    sg.boto().put_object(Bucket="photos", Key="cond/counter", Body=b"0")
    done = [0] * 8

    def bump(i):
        cond = {}
        c = _conditional(sg.boto(), cond)  # the hook reads cond as it is at each PUT
        while done[i] < 5:
            got = c.get_object(Bucket="photos", Key="cond/counter")
            n = int(got["Body"].read())
            cond["If-Match"] = got["ETag"]
            if code(lambda: c.put_object(Bucket="photos", Key="cond/counter", Body=b"%d" % (n + 1)))[0] == 200:
                done[i] += 1
    threads = [threading.Thread(target=bump, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert int(sg.boto().get_object(Bucket="photos", Key="cond/counter")["Body"].read()) == 40


def test_conditional_write_headers_hostile(sg):
    """Conditional-write headers that are not one ETag or '*' are refused
    with the reason, and nothing is written: an ETag longer than any this
    server makes, a list, a quote inside, an empty one, an If-None-Match
    that is not '*'."""
    key = "/photos/cond-hostile/k.txt"
    assert sg.raw("PUT", key, body=b"first")[0] == 200
    for headers, code in [({"if-match": '"' + "a" * 60 + '"'}, "InvalidArgument"),
                          ({"if-match": '"a","b"'}, "InvalidArgument"),
                          ({"if-match": '"a"b"'}, "InvalidArgument"),
                          ({"if-match": '""'}, "InvalidArgument"),
                          ({"if-none-match": '"abc"'}, "NotImplemented"),
                          ({"if-none-match": "*, *"}, "NotImplemented")]:
        st, _, body = sg.raw("PUT", key, body=b"second", headers=headers)
        assert st in (400, 501) and xml_error(body)[0] == code, (headers, st, body)
    st, _, body = sg.raw("GET", key)
    assert st == 200 and body == b"first"


def test_aws_copy_rm_delete_objects(sg, tmp_path):
    """s3 cp between keys copies bytes and metadata server-side (CopyObject);
    s3 rm deletes; s3api delete-objects deletes several keys at once and
    reports each, and the directories left empty are pruned on disk."""
    src = tmp_path / "c.txt"
    src.write_bytes(b"copy me\n" * 100)
    sg.aws("s3", "cp", "--only-show-errors", "--content-type", "text/x-copy", str(src), "s3://photos/aws-cp/a/src.txt")
    copies_before = sg.metric("CopyObject", 200)
    sg.aws("s3", "cp", "--only-show-errors", "s3://photos/aws-cp/a/src.txt", "s3://photos/aws-cp/b/dst.txt")
    assert sg.metric("CopyObject", 200) - copies_before == 1
    out = tmp_path / "d.txt"
    head = sg.aws_json("s3api", "get-object", "--bucket", "photos", "--key", "aws-cp/b/dst.txt", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert head["ContentType"] == "text/x-copy"
    assert head["ETag"] == '"%s"' % hashlib.md5(src.read_bytes()).hexdigest()
    sg.aws("s3", "rm", "--only-show-errors", "s3://photos/aws-cp/a/src.txt")
    assert not os.path.exists(sg.path("photos", "aws-cp/a"))  # pruned
    for i in range(3):
        sg.aws("s3", "cp", "--only-show-errors", str(src), f"s3://photos/aws-cp/m/{i}.txt")
    objs = {"Objects": [{"Key": f"aws-cp/m/{i}.txt"} for i in range(3)] + [{"Key": "aws-cp/never-was"}]}
    res = sg.aws_json("s3api", "delete-objects", "--bucket", "photos", "--delete", json.dumps(objs))
    assert sorted(d["Key"] for d in res["Deleted"]) == sorted(o["Key"] for o in objs["Objects"])
    assert not res.get("Errors")
    left = sg.aws_json("s3api", "list-objects-v2", "--bucket", "photos", "--prefix", "aws-cp/")
    assert [c["Key"] for c in left.get("Contents", [])] == ["aws-cp/b/dst.txt"]
    assert not os.path.exists(sg.path("photos", "aws-cp/m"))


def test_presigned_urls(sg, tmp_path):
    """`aws s3 presign` URLs work from plain requests and curl; a tampered
    signature, a tampered key and a changed expiry answer 403 with an S3
    XML error; an expired URL (signed here, dated 2 h ago) is AccessDenied
    "Request has expired"; a URL signed by this file's own SigV4 works."""
    data = b"presigned content\n"
    (tmp_path / "p.txt").write_bytes(data)
    sg.aws("s3", "cp", "--only-show-errors", str(tmp_path / "p.txt"), "s3://photos/presign/p.txt")
    url = sg.aws("s3", "presign", "--expires-in", "300", "s3://photos/presign/p.txt").stdout.decode().strip()
    s = harness.session()
    r = s.get(url, timeout=10)
    assert r.status_code == 200 and r.content == data
    c = harness.curl(["-o", "-", url])
    assert c.returncode == 0 and c.stdout == data
    sig = url.rsplit("X-Amz-Signature=", 1)[1]
    bad = url[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
    r = s.get(bad, timeout=10)
    assert r.status_code == 403 and xml_error(r.content)[0] == "SignatureDoesNotMatch"
    r = s.get(url.replace("/presign/p.txt", "/presign/q.txt"), timeout=10)
    assert r.status_code == 403 and xml_error(r.content)[0] == "SignatureDoesNotMatch"
    r = s.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"), timeout=10)
    assert r.status_code == 403 and xml_error(r.content)[0] == "SignatureDoesNotMatch"
    r = s.put(url, data=b"overwrite", timeout=10)  # signed for GET
    assert r.status_code == 403 and xml_error(r.content)[0] == "SignatureDoesNotMatch"
    old = presign(sg.port, "GET", "/photos/presign/p.txt", 60, when=_now() - datetime.timedelta(hours=2))
    r = s.get(old, timeout=10)
    assert r.status_code == 403
    code, msg = xml_error(r.content)
    assert code == "AccessDenied" and "expired" in msg.lower()
    mine = presign(sg.port, "GET", "/photos/presign/p.txt", 60)
    r = s.get(mine, timeout=10)
    assert r.status_code == 200 and r.content == data
    assert open(sg.path("photos", "presign/p.txt"), "rb").read() == data


# ------------------------------------------------------------------ boto3 ---

def _client_error(fn, *a, **kw):
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        fn(*a, **kw)
    e = ei.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_metadata_content_type(sg):
    """put_object's Metadata and ContentType come back from head_object and
    get_object as sent; a second put replaces them (nothing merges);
    response-* parameters override; Content-Encoding, Cache-Control,
    Content-Language, Content-Disposition and Expires are kept with the
    object, answered on HEAD and GET and copied by CopyObject."""
    c = sg.boto()
    c.put_object(Bucket="photos", Key="boto-meta/m.json", Body=b'{"a": 1}', ContentType="application/x-test+json",
                 Metadata={"owner": "storgate", "Camel-Case": "Value With Spaces"})
    h = c.head_object(Bucket="photos", Key="boto-meta/m.json")
    assert h["ContentType"] == "application/x-test+json"
    assert h["Metadata"] == {"owner": "storgate", "camel-case": "Value With Spaces"}
    assert h["ContentLength"] == 8 and h["ETag"] == '"%s"' % hashlib.md5(b'{"a": 1}').hexdigest()
    g = c.get_object(Bucket="photos", Key="boto-meta/m.json")
    assert g["Body"].read() == b'{"a": 1}' and g["Metadata"]["owner"] == "storgate"
    c.put_object(Bucket="photos", Key="boto-meta/m.json", Body=b"plain")
    h = c.head_object(Bucket="photos", Key="boto-meta/m.json")
    assert h["Metadata"] == {} and h["ContentLength"] == 5
    g = c.get_object(Bucket="photos", Key="boto-meta/m.json", ResponseContentType="text/x-override",
                     ResponseContentDisposition="attachment; filename=m.json")
    assert g["ContentType"] == "text/x-override" and g["ContentDisposition"] == "attachment; filename=m.json"
    # the standard headers S3 keeps with an object: a gzip'd object must come back saying so
    gz = zlib.compress(b"compressed " * 100)
    exp = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    c.put_object(Bucket="photos", Key="boto-meta/page.html", Body=gz, ContentType="text/html",
                 ContentEncoding="deflate", CacheControl="public, max-age=600", ContentLanguage="ko-KR",
                 ContentDisposition='inline; filename="page.html"', Expires=exp)
    h = c.head_object(Bucket="photos", Key="boto-meta/page.html")
    assert (h["ContentEncoding"], h["CacheControl"], h["ContentLanguage"], h["ContentDisposition"], h["Expires"]) == \
        ("deflate", "public, max-age=600", "ko-KR", 'inline; filename="page.html"', exp)
    assert h["Metadata"] == {}
    r = harness.session().get(c.generate_presigned_url("get_object", Params={"Bucket": "photos",
                                                                              "Key": "boto-meta/page.html"}))
    assert r.headers["Content-Encoding"] == "deflate" and r.text == "compressed " * 100  # decoded by requests
    c.copy_object(Bucket="photos", Key="boto-meta/page-copy.html",
                  CopySource={"Bucket": "photos", "Key": "boto-meta/page.html"})
    assert c.head_object(Bucket="photos", Key="boto-meta/page-copy.html")["CacheControl"] == "public, max-age=600"


def test_boto3_list_v1_marker(sg):
    """ListObjects (v1) pages with MaxKeys and Marker: each page starts after
    the marker, IsTruncated is true until the last, and the pages together
    are every key once; with a delimiter, NextMarker continues past a
    common prefix."""
    c = sg.boto()
    got, marker = [], ""
    while True:
        r = c.list_objects(Bucket="many", Prefix="d0", MaxKeys=170, Marker=marker)
        keys = [o["Key"] for o in r.get("Contents", [])]
        assert all(k > marker for k in keys) and len(keys) <= 170
        got += keys
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or keys[-1]
    assert got == [k for k in sg.many_keys if k.startswith("d0")]
    seen, marker = [], ""
    while True:
        r = c.list_objects(Bucket="many", Delimiter="/", MaxKeys=4, Marker=marker)
        seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        marker = r["NextMarker"]
    assert sorted(seen) == sorted(set(k.split("/")[0] + "/" if "/" in k else k for k in sg.many_keys))
    assert len(seen) == len(set(seen))


@pytest.mark.timeout_s(90)
def test_boto3_multipart_by_hand_and_abort(sg):
    """create / upload_part x4 (three of 5 MiB and a small last) /
    list_parts / complete: the parts listed with their sizes and MD5
    ETags, the object byte-exact with ETag md5-of-md5s-4 and the upload
    gone. A second upload aborted after a part: absent from
    list_multipart_uploads, its directory removed, no object."""
    c = sg.boto()
    key = "boto-mpu/assembled.bin"
    parts = [os.urandom(5 * MIB) for _ in range(3)] + [b"the small last part"]
    up = c.create_multipart_upload(Bucket="photos", Key=key, ContentType="application/x-assembled",
                                   Metadata={"k": "v"})
    uid = up["UploadId"]
    ups = c.list_multipart_uploads(Bucket="photos", Prefix="boto-mpu/")
    assert [(u["Key"], u["UploadId"]) for u in ups.get("Uploads", [])] == [(key, uid)]
    etags = []
    for i, p in enumerate(parts, 1):
        etags.append(c.upload_part(Bucket="photos", Key=key, UploadId=uid, PartNumber=i, Body=p)["ETag"])
        assert etags[-1] == '"%s"' % hashlib.md5(p).hexdigest()
    lp = c.list_parts(Bucket="photos", Key=key, UploadId=uid)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in lp["Parts"]] == \
        [(i, len(p), etags[i - 1]) for i, p in enumerate(parts, 1)]
    lp2 = c.list_parts(Bucket="photos", Key=key, UploadId=uid, MaxParts=2, PartNumberMarker=1)
    assert [p["PartNumber"] for p in lp2["Parts"]] == [2, 3] and lp2["IsTruncated"]
    assert _client_error(c.head_object, Bucket="photos", Key=key) == ("404", 404)  # not visible before complete
    done = c.complete_multipart_upload(Bucket="photos", Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    data = b"".join(parts)
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-4"
    assert done["ETag"] == f'"{want}"'
    h = c.head_object(Bucket="photos", Key=key)
    assert h["ETag"] == f'"{want}"' and h["ContentLength"] == len(data)
    assert h["ContentType"] == "application/x-assembled" and h["Metadata"] == {"k": "v"}
    assert hashlib.sha256(c.get_object(Bucket="photos", Key=key)["Body"].read()).digest() == \
        hashlib.sha256(data).digest()
    assert not c.list_multipart_uploads(Bucket="photos", Prefix="boto-mpu/").get("Uploads")
    # abort
    uid2 = c.create_multipart_upload(Bucket="photos", Key="boto-mpu/aborted.bin")["UploadId"]
    c.upload_part(Bucket="photos", Key="boto-mpu/aborted.bin", UploadId=uid2, PartNumber=1, Body=b"x" * 1000)
    assert os.path.isdir(sg.path("photos", f".refract-s3/uploads/{uid2}"))
    c.abort_multipart_upload(Bucket="photos", Key="boto-mpu/aborted.bin", UploadId=uid2)
    assert not c.list_multipart_uploads(Bucket="photos", Prefix="boto-mpu/").get("Uploads")
    assert not os.path.exists(sg.path("photos", f".refract-s3/uploads/{uid2}"))
    assert _client_error(c.head_object, Bucket="photos", Key="boto-mpu/aborted.bin") == ("404", 404)
    assert _client_error(c.upload_part, Bucket="photos", Key="boto-mpu/aborted.bin", UploadId=uid2, PartNumber=2,
                         Body=b"late")[0] == "NoSuchUpload"
    assert _reserved_clean(sg.dirs["photos"]) == []


def test_boto3_multipart_refusals(sg):
    """complete refuses a part whose ETag differs (InvalidPart), a part
    smaller than 5 MiB that is not the last (EntityTooSmall), and an upload
    id for another key (NoSuchUpload); the upload survives each refusal and
    nothing is published."""
    c = sg.boto()
    key = "boto-mpu/refused.bin"
    uid = c.create_multipart_upload(Bucket="photos", Key=key)["UploadId"]
    e1 = c.upload_part(Bucket="photos", Key=key, UploadId=uid, PartNumber=1, Body=b"a" * 1000)["ETag"]
    e2 = c.upload_part(Bucket="photos", Key=key, UploadId=uid, PartNumber=2, Body=b"b" * 1000)["ETag"]
    bad = '"%s"' % hashlib.md5(b"other").hexdigest()
    assert _client_error(c.complete_multipart_upload, Bucket="photos", Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": bad}]}) == ("InvalidPart", 400)
    assert _client_error(c.complete_multipart_upload, Bucket="photos", Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}) == ("EntityTooSmall", 400)
    assert _client_error(c.complete_multipart_upload, Bucket="photos", Key="boto-mpu/other.bin", UploadId=uid,
                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}) == ("NoSuchUpload", 404)
    assert _client_error(c.head_object, Bucket="photos", Key=key) == ("404", 404)
    assert [p["PartNumber"] for p in c.list_parts(Bucket="photos", Key=key, UploadId=uid)["Parts"]] == [1, 2]
    # a single small part is a whole object
    done = c.complete_multipart_upload(Bucket="photos", Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert c.get_object(Bucket="photos", Key=key)["Body"].read() == b"a" * 1000
    assert done["ETag"].endswith('-1"')


@pytest.mark.timeout_s(90)
def test_boto3_upload_part_copy(sg):
    """upload_part_copy with CopySourceRange takes exactly those bytes of
    another object (two parts: the first 5 MiB and the rest), and the
    completed object equals the source; copy_object reads a source whose
    key needs escaping, honours x-amz-copy-source-if-* (412 when one does
    not hold; If-Match overriding If-Unmodified-Since) and knows no
    version but "null"."""
    c = sg.boto()
    src = os.urandom(6 * MIB + 123)
    c.put_object(Bucket="photos", Key="boto-upc/src.bin", Body=src)
    key = "boto-upc/dst.bin"
    uid = c.create_multipart_upload(Bucket="photos", Key=key)["UploadId"]
    r1 = c.upload_part_copy(Bucket="photos", Key=key, UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": "photos", "Key": "boto-upc/src.bin"},
                            CopySourceRange=f"bytes=0-{5 * MIB - 1}")
    r2 = c.upload_part_copy(Bucket="photos", Key=key, UploadId=uid, PartNumber=2,
                            CopySource={"Bucket": "photos", "Key": "boto-upc/src.bin"},
                            CopySourceRange=f"bytes={5 * MIB}-{len(src) - 1}")
    assert r1["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src[:5 * MIB]).hexdigest()
    assert r2["CopyPartResult"]["ETag"] == '"%s"' % hashlib.md5(src[5 * MIB:]).hexdigest()
    c.complete_multipart_upload(Bucket="photos", Key=key, UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    assert c.get_object(Bucket="photos", Key=key)["Body"].read() == src
    # copy_object with a key that needs escaping in x-amz-copy-source
    c.put_object(Bucket="photos", Key="boto-upc/a b+c&d.txt", Body=b"escaped source")
    c.copy_object(Bucket="photos", Key="boto-upc/copied.txt", CopySource={"Bucket": "photos", "Key": "boto-upc/a b+c&d.txt"})
    assert c.get_object(Bucket="photos", Key="boto-upc/copied.txt")["Body"].read() == b"escaped source"
    assert _client_error(c.copy_object, Bucket="photos", Key="boto-upc/x.txt",
                         CopySource={"Bucket": "photos", "Key": "boto-upc/none"})[0] == "NoSuchKey"
    # x-amz-copy-source-if-*: a condition that does not hold is 412 and copies nothing
    src_ref = {"Bucket": "photos", "Key": "boto-upc/a b+c&d.txt"}
    etag = '"%s"' % hashlib.md5(b"escaped source").hexdigest()
    for kw in ({"CopySourceIfMatch": '"0000"'}, {"CopySourceIfNoneMatch": etag},
               {"CopySourceIfModifiedSince": datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc)},
               {"CopySourceIfUnmodifiedSince": datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)}):
        assert _client_error(c.copy_object, Bucket="photos", Key="boto-upc/cond.txt", CopySource=src_ref, **kw) == \
            ("PreconditionFailed", 412), kw
    assert not os.path.exists(sg.path("photos", "boto-upc/cond.txt"))
    c.copy_object(Bucket="photos", Key="boto-upc/cond.txt", CopySource=src_ref, CopySourceIfMatch=etag,
                  CopySourceIfUnmodifiedSince=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
    assert c.get_object(Bucket="photos", Key="boto-upc/cond.txt")["Body"].read() == b"escaped source"
    assert _client_error(c.copy_object, Bucket="photos", Key="boto-upc/v.txt",
                         CopySource=dict(src_ref, VersionId="abc")) == ("InvalidArgument", 400)
    c.copy_object(Bucket="photos", Key="boto-upc/v.txt", CopySource=dict(src_ref, VersionId="null"))


def test_boto3_wrong_credentials(sg):
    """A wrong secret key is SignatureDoesNotMatch (403) and writes nothing;
    an unknown access key is InvalidAccessKeyId (403)."""
    bad = sg.boto(secret="not-the-secret")
    assert _client_error(bad.put_object, Bucket="photos", Key="boto-cred/x", Body=b"x") == ("SignatureDoesNotMatch", 403)
    assert not os.path.exists(sg.path("photos", "boto-cred"))
    assert _client_error(bad.list_objects_v2, Bucket="photos") == ("SignatureDoesNotMatch", 403)
    nobody = sg.boto(access_key="NOBODY")
    assert _client_error(nobody.get_object, Bucket="photos", Key="x") == ("InvalidAccessKeyId", 403)
    assert _client_error(sg.boto().list_objects_v2, Bucket="nosuchbucket") == ("NoSuchBucket", 404)


def test_boto3_checksum_crc32(sg):
    """put_object with ChecksumAlgorithm CRC32 (botocore sends the
    x-amz-checksum-crc32 header over http) is accepted and the server
    echoes the same CRC; a deliberately wrong checksum, or a wrong
    Content-MD5, is BadDigest and leaves the previous object in place."""
    c = sg.boto()
    data = harness.pattern_bytes(100000, seed=3)
    want = b64_be32(zlib.crc32(data))
    r = c.put_object(Bucket="photos", Key="boto-sum/c.bin", Body=data, ChecksumAlgorithm="CRC32")
    assert r.get("ChecksumCRC32") == want
    assert c.get_object(Bucket="photos", Key="boto-sum/c.bin")["Body"].read() == data
    assert _client_error(c.put_object, Bucket="photos", Key="boto-sum/c.bin", Body=b"other bytes",
                         ChecksumCRC32=b64_be32(zlib.crc32(b"different"))) == ("BadDigest", 400)
    assert _client_error(c.put_object, Bucket="photos", Key="boto-sum/c.bin", Body=b"other bytes",
                         ContentMD5=base64.b64encode(hashlib.md5(b"different").digest()).decode()) == ("BadDigest", 400)
    assert c.get_object(Bucket="photos", Key="boto-sum/c.bin")["Body"].read() == data
    assert _client_error(c.put_object, Bucket="photos", Key="boto-sum/new.bin", Body=b"x",
                         ChecksumCRC32="AAAAAA==") == ("BadDigest", 400)
    assert _client_error(c.head_object, Bucket="photos", Key="boto-sum/new.bin") == ("404", 404)
    assert _reserved_clean(sg.dirs["photos"]) == []


def test_boto3_odd_keys_round_trip(sg):
    """Keys with spaces, '+', '~', '=', '&', '%', '?', '#', quotes, parentheses
    and UTF-8 go up, list back (ListObjectsV2 with and without
    EncodingType url, ListObjects v1) and read back, each under its own
    name."""
    c = sg.boto()
    keys = ["odd/sp ace/a b.txt", "odd/plus+sign.txt", "odd/tilde~x", "odd/eq=1&b=2.txt", "odd/pct%20lit.txt",
            "odd/q?mark", "odd/hash#frag", "odd/paren(1)!*'.txt", "odd/ünïcödé/😀.bin", "odd/日本語.txt",
            "odd/semi;colon,comma:@$"]
    for k in keys:
        c.put_object(Bucket="photos", Key=k, Body=k.encode())
    listed = [o["Key"] for o in c.list_objects_v2(Bucket="photos", Prefix="odd/")["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    listed = [o["Key"] for o in c.list_objects(Bucket="photos", Prefix="odd/")["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())
    # botocore asks for encoding-type=url and decodes; without it the XML carries the keys as text
    st, _, body = sg.raw("GET", "/photos?list-type=2&prefix=odd%2F")
    assert st == 200
    raw_keys = [e.text for e in ET.fromstring(body).iter(NS + "Key")]
    assert raw_keys == sorted(keys, key=lambda k: k.encode())
    for k in keys:
        assert c.get_object(Bucket="photos", Key=k)["Body"].read() == k.encode()
        assert open(sg.path("photos", k), "rb").read() == k.encode()
    c.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": k} for k in keys]})
    assert "Contents" not in c.list_objects_v2(Bucket="photos", Prefix="odd/")


# ------------------------------------------------------------ aws-chunked ---

def _streaming_headers(n, extra=None):
    h = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(n), "content-type": "application/x-chunked"}
    h.update(extra or {})
    return h


def _put_signed_chunked(sg, key, data, chunk, corrupt=False, decoded_len=None):
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT: the headers signed first
    (content-length is the encoded body's, so it is computed from a dry run
    of the framing), then the chunks chained from that seed signature."""
    target = "/photos/" + urllib.parse.quote(key)
    n_chunks = -(-len(data) // chunk)
    sizes = [min(chunk, len(data) - i * chunk) for i in range(n_chunks)] + [0]
    enc_len = sum(len(f"{s:x};chunk-signature=".encode()) + 64 + 2 + s + 2 for s in sizes)
    h = {"host": f"127.0.0.1:{sg.port}", "content-length": str(enc_len)}
    h.update(_streaming_headers(len(data) if decoded_len is None else decoded_len))
    seed, amz_date, key_, scope = sign_headers("PUT", target, h, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    body = chunk_signed_body(data, chunk, seed, key_, amz_date, scope, corrupt=corrupt)
    assert len(body) == enc_len
    return _send(sg, "PUT", target, h, body)


def _send(sg, method, target, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", sg.port, timeout=60)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_aws_chunked_signed_payload(sg):
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT signed by this file's SigV4
    (64 KiB chunks, each signature chained from the previous) stores the
    decoded bytes exactly, with the ETag of the decoded data; a chunk whose
    bytes were changed after signing is SignatureDoesNotMatch, a wrong
    x-amz-decoded-content-length is refused, and neither leaves an object
    or a temporary file."""
    data = harness.pattern_bytes(200 * 1024 + 17, seed=11)
    st, h, body = _put_signed_chunked(sg, "chunked/signed.bin", data, 64 * 1024)
    assert st == 200, body
    assert h["etag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert open(sg.path("photos", "chunked/signed.bin"), "rb").read() == data
    st, h, body = sg.raw("GET", "/photos/chunked/signed.bin")
    assert st == 200 and body == data and h["content-type"] == "application/x-chunked"
    assert "content-encoding" not in h  # aws-chunked framed the request; it is no coding of the object
    st, _, body = _put_signed_chunked(sg, "chunked/corrupt.bin", data, 64 * 1024, corrupt=True)
    assert st == 403 and xml_error(body)[0] == "SignatureDoesNotMatch"
    st, _, body = _put_signed_chunked(sg, "chunked/short.bin", data, 64 * 1024, decoded_len=len(data) + 1)
    assert st == 400 and xml_error(body)[0] in ("IncompleteBody", "InvalidRequest"), body
    for k in ("chunked/corrupt.bin", "chunked/short.bin"):
        st, _, body = sg.raw("GET", "/photos/" + k)
        assert st == 404 and xml_error(body)[0] == "NoSuchKey"
    assert _reserved_clean(sg.dirs["photos"]) == []


def _unsigned_trailer_put(sg, key, data, chunk, trailer_value, encoding="aws-chunked"):
    target = "/photos/" + urllib.parse.quote(key)
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    body += b"0\r\n" + f"x-amz-checksum-crc32c:{trailer_value}\r\n".encode() + b"\r\n"
    h = {"host": f"127.0.0.1:{sg.port}", "content-length": str(len(body))}
    h.update(_streaming_headers(len(data), {"x-amz-trailer": "x-amz-checksum-crc32c", "content-encoding": encoding}))
    sign_headers("PUT", target, h, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    return _send(sg, "PUT", target, h, body)


def test_aws_chunked_unsigned_trailer_crc32c(sg):
    """A STREAMING-UNSIGNED-PAYLOAD-TRAILER PUT with an x-amz-checksum-crc32c
    trailer (CRC32C computed here in pure Python; checked against its
    published test vector) stores the decoded bytes exactly; a wrong
    trailer checksum is BadDigest and stores nothing."""
    assert crc32c(b"123456789") == 0xE3069283
    data = harness.pattern_bytes(150 * 1024 + 5, seed=12)
    good = b64_be32(crc32c(data))
    st, h, body = _unsigned_trailer_put(sg, "chunked/trailer.bin", data, 40000, good)
    assert st == 200, body
    assert h["etag"] == '"%s"' % hashlib.md5(data).hexdigest()
    st, _, body = sg.raw("GET", "/photos/chunked/trailer.bin")
    assert st == 200 and body == data
    st, _, body = _unsigned_trailer_put(sg, "chunked/badtrailer.bin", data, 40000, b64_be32(crc32c(data) ^ 1))
    assert st == 400 and xml_error(body)[0] == "BadDigest", body
    st, _, body = sg.raw("GET", "/photos/chunked/badtrailer.bin")
    assert st == 404 and xml_error(body)[0] == "NoSuchKey"
    # a gzip'd body sent aws-chunked keeps "gzip" and loses "aws-chunked"
    gz = zlib.compress(data[:5000])
    st, _, body = _unsigned_trailer_put(sg, "chunked/gz.bin", gz, 1000, b64_be32(crc32c(gz)), "aws-chunked, gzip")
    assert st == 200, body
    st, h, body = sg.raw("GET", "/photos/chunked/gz.bin")
    assert body == gz and h["content-encoding"] == "gzip"
    # replacing an object with a bad upload keeps the old one
    st, _, body = _unsigned_trailer_put(sg, "chunked/trailer.bin", b"new" * 10, 7, b64_be32(crc32c(b"old")))
    assert st == 400
    assert sg.raw("GET", "/photos/chunked/trailer.bin")[2] == data
    assert _reserved_clean(sg.dirs["photos"]) == []


# --------------------------------------------------------- s3cmd, rclone ---

def _tree(root, n_dirs, per_dir, seed):
    files = {}
    for i in range(n_dirs):
        for j in range(per_dir):
            rel = f"dir{i}/sub{j % 2}/f{j}.dat" if j % 3 else f"dir{i}/f{j}.dat"
            data = harness.pattern_bytes(100 + 37 * (i * per_dir + j), seed=seed + i * 100 + j)
            p = os.path.join(root, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
            files[rel] = data
    return files


@pytest.mark.timeout_s(120)
def test_s3cmd_put_get_ls_del_sync_info(sg, tmp_path):
    """s3cmd (which signs Content-Length): put, get (bytes equal), ls,
    info (MD5 and MIME type shown; the unsupported subresources it may ask
    for answer 501 NotImplemented in S3 XML), sync of a small tree (every
    file stored byte-exact, a second sync uploads nothing), del."""
    src = tmp_path / "s.txt"
    src.write_bytes(b"s3cmd says hi\n" * 50)
    sg.s3cmd("put", str(src), "s3://photos/s3cmd/s.txt")
    assert open(sg.path("photos", "s3cmd/s.txt"), "rb").read() == src.read_bytes()
    back = tmp_path / "back.txt"
    sg.s3cmd("get", "--force", "s3://photos/s3cmd/s.txt", str(back))
    assert back.read_bytes() == src.read_bytes()
    ls = sg.s3cmd("ls", "s3://photos/s3cmd/").stdout.decode()
    assert "s3://photos/s3cmd/s.txt" in ls and f" {len(src.read_bytes())} " in ls
    info = sg.s3cmd("info", "s3://photos/s3cmd/s.txt").stdout.decode()
    assert hashlib.md5(src.read_bytes()).hexdigest() in info and "text/plain" in info
    for sub in ("acl", "policy", "cors", "lifecycle", "tagging"):
        st, _, body = sg.raw("GET", f"/photos/s3cmd/s.txt?{sub}")
        assert st == 501 and xml_error(body)[0] == "NotImplemented", (sub, body)
        st, _, body = sg.raw("GET", f"/photos?{sub}")
        assert st == 501 and xml_error(body)[0] == "NotImplemented", (sub, body)
    tree = tmp_path / "tree"
    files = _tree(str(tree), 3, 4, seed=100)
    sg.s3cmd("sync", str(tree) + "/", "s3://photos/s3cmd/sync/")
    for rel, data in files.items():
        assert open(sg.path("photos", "s3cmd/sync/" + rel), "rb").read() == data
    again = sg.s3cmd("sync", str(tree) + "/", "s3://photos/s3cmd/sync/").stdout.decode()
    assert "upload:" not in again, again
    ls = sg.s3cmd("ls", "-r", "s3://photos/s3cmd/sync/").stdout.decode()
    assert sorted(line.split("s3://photos/s3cmd/sync/")[1] for line in ls.splitlines()) == sorted(files)
    sg.s3cmd("del", "s3://photos/s3cmd/s.txt")
    assert not os.path.exists(sg.path("photos", "s3cmd/s.txt"))
    sg.s3cmd("del", "--recursive", "--force", "s3://photos/s3cmd/")
    assert not os.path.exists(sg.path("photos", "s3cmd"))


@pytest.mark.timeout_s(120)
def test_rclone_copy_check_lsf_delete(sg, tmp_path):
    """rclone: copy of a 50-file tree in subdirectories; `rclone check`
    finds every file matching by size and MD5 (single-PUT ETags are MD5s,
    no hash left unchecked); lsf -R lists exactly the tree; delete removes
    every object, and the emptied directories are pruned on disk."""
    tree = tmp_path / "tree"
    files = _tree(str(tree), 5, 10, seed=500)
    assert len(files) == 50
    sg.rclone("copy", str(tree), "sg:photos/rclone")
    for rel, data in files.items():
        assert open(sg.path("photos", "rclone/" + rel), "rb").read() == data
    chk = sg.rclone("check", str(tree), "sg:photos/rclone")
    log = chk.stderr.decode()
    assert "0 differences found" in log and "50 matching files" in log, log
    assert "could not be checked" not in log, log
    lsf = sg.rclone("lsf", "-R", "--files-only", "sg:photos/rclone").stdout.decode().split()
    assert sorted(lsf) == sorted(files)
    md5s = sg.rclone("md5sum", "sg:photos/rclone").stdout.decode()
    assert sorted(line.split(None, 1) for line in md5s.splitlines()) == \
        sorted([hashlib.md5(d).hexdigest(), r] for r, d in files.items())
    sg.rclone("delete", "sg:photos/rclone")
    assert sg.rclone("lsf", "-R", "--files-only", "sg:photos/rclone").stdout == b""
    assert not os.path.exists(sg.path("photos", "rclone"))


# ---------------------------------------------------- access and mounts ---

def test_access_rules(sg):
    """access.put false: PutObject, CopyObject into the bucket and
    CreateMultipartUpload are 403 AccessDenied and write nothing;
    access.delete false: DeleteObject and DeleteObjects are 403 and the
    object stays; reads still work. access.get false: GET, HEAD and listing
    are 403 while PUT works."""
    c = sg.boto()
    assert c.get_object(Bucket="locked", Key="keep.txt")["Body"].read() == b"locked but readable\n"
    assert _client_error(c.put_object, Bucket="locked", Key="new.txt", Body=b"x") == ("AccessDenied", 403)
    assert _client_error(c.copy_object, Bucket="locked", Key="copy.txt",
                         CopySource={"Bucket": "locked", "Key": "keep.txt"}) == ("AccessDenied", 403)
    assert _client_error(c.create_multipart_upload, Bucket="locked", Key="mpu.bin") == ("AccessDenied", 403)
    assert _client_error(c.delete_object, Bucket="locked", Key="keep.txt") == ("AccessDenied", 403)
    assert _client_error(c.delete_objects, Bucket="locked",
                         Delete={"Objects": [{"Key": "keep.txt"}]}) == ("AccessDenied", 403)
    assert sorted(os.listdir(sg.dirs["locked"])) == ["keep.txt"]
    st, _, body = sg.raw("PUT", "/locked/raw.txt", body=b"raw")
    code, msg = xml_error(body)
    assert st == 403 and code == "AccessDenied" and "access.put" in msg
    # get disabled
    assert _client_error(c.get_object, Bucket="dropbox", Key="in.txt") == ("AccessDenied", 403)
    assert _client_error(c.head_object, Bucket="dropbox", Key="in.txt") == ("403", 403)
    assert _client_error(c.list_objects_v2, Bucket="dropbox") == ("AccessDenied", 403)
    # … and a copy whose source is in it
    assert _client_error(c.copy_object, Bucket="photos", Key="access/stolen.txt",
                         CopySource={"Bucket": "dropbox", "Key": "in.txt"}) == ("AccessDenied", 403)
    assert not os.path.exists(sg.path("photos", "access/stolen.txt"))
    c.put_object(Bucket="dropbox", Key="drop.txt", Body=b"dropped")
    assert open(sg.path("dropbox", "drop.txt"), "rb").read() == b"dropped"


def test_hidden_mount(sg):
    """Keys under the hidden mount point are invisible: a file placed
    directly in the hidden directory is in no listing (whole bucket,
    prefix hidden/, delimiter), GET and HEAD are 404, PUT, multipart and
    copy into it are 403 and write nothing, DELETE is 403 and removes
    nothing; a root-mount directory named like the mount point is shadowed
    too."""
    with open(os.path.join(sg.dirs["hidden"], "secret.txt"), "wb") as f:
        f.write(b"hidden bytes")
    os.makedirs(os.path.join(sg.dirs["hidden"], "deep"), exist_ok=True)
    with open(os.path.join(sg.dirs["hidden"], "deep", "x.txt"), "wb") as f:
        f.write(b"deeper")
    os.makedirs(sg.path("photos", "hidden"), exist_ok=True)  # the root mount's own "hidden/" is shadowed
    with open(sg.path("photos", "hidden/shadowed.txt"), "wb") as f:
        f.write(b"shadowed")
    c = sg.boto()
    c.put_object(Bucket="photos", Key="hid/src.txt", Body=b"src")
    everything = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket="photos"):
        everything += [o["Key"] for o in page.get("Contents", [])]
    assert everything and not [k for k in everything if k.startswith("hidden")]
    assert "Contents" not in c.list_objects_v2(Bucket="photos", Prefix="hidden/")
    assert "Contents" not in c.list_objects(Bucket="photos", Prefix="hidden")
    top = c.list_objects_v2(Bucket="photos", Delimiter="/")
    assert "hidden/" not in [p["Prefix"] for p in top.get("CommonPrefixes", [])]
    for key in ("hidden/secret.txt", "hidden/deep/x.txt", "hidden/shadowed.txt"):
        assert _client_error(c.get_object, Bucket="photos", Key=key) == ("NoSuchKey", 404)
        assert _client_error(c.head_object, Bucket="photos", Key=key) == ("404", 404)
    assert _client_error(c.put_object, Bucket="photos", Key="hidden/new.txt", Body=b"x") == ("AccessDenied", 403)
    assert _client_error(c.put_object, Bucket="photos", Key="hidden/secret.txt", Body=b"x") == ("AccessDenied", 403)
    assert _client_error(c.create_multipart_upload, Bucket="photos", Key="hidden/m.bin") == ("AccessDenied", 403)
    assert _client_error(c.copy_object, Bucket="photos", Key="hidden/copy.txt",
                         CopySource={"Bucket": "photos", "Key": "hid/src.txt"}) == ("AccessDenied", 403)
    assert _client_error(c.copy_object, Bucket="photos", Key="hid/leak.txt",
                         CopySource={"Bucket": "photos", "Key": "hidden/secret.txt"}) == ("NoSuchKey", 404)
    assert _client_error(c.delete_object, Bucket="photos", Key="hidden/secret.txt") == ("AccessDenied", 403)
    r = c.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": "hidden/secret.txt"}]})
    assert [e["Code"] for e in r.get("Errors", [])] == ["AccessDenied"]
    assert sorted(os.listdir(sg.dirs["hidden"])) == ["deep", "secret.txt"]
    assert open(os.path.join(sg.dirs["hidden"], "secret.txt"), "rb").read() == b"hidden bytes"
    assert not os.path.exists(sg.path("photos", "hid/leak.txt"))
    # the reserved directory is not addressable either
    for key in (".refract-s3/tmp/x", ".refract-s3"):
        st, _, body = sg.raw("GET", "/photos/" + key)
        assert st in (400, 403, 404), (key, st)
        st, _, body = sg.raw("PUT", "/photos/" + key, body=b"x")
        assert st in (400, 403), (key, st)
    assert _reserved_clean(sg.dirs["photos"]) == []


def test_hostile_paths_and_symlinks(sg):
    """'..' segments (plain, %2e%2e, %2f-joined), a symlink inside the mount
    to a file outside it and one to a directory outside it: nothing outside
    is ever served (404/403/400), not listed, and PUT / copy / multipart to
    such paths never write outside the mount (the outside directory is
    unchanged, byte for byte)."""
    out = sg.dirs["outside"]
    with open(os.path.join(out, "secret.txt"), "wb") as f:
        f.write(b"outside secret")
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    os.makedirs(sg.path("photos", "evil"), exist_ok=True)
    os.symlink(os.path.join(out, "secret.txt"), sg.path("photos", "evil/abs-link.txt"))
    os.symlink(os.path.relpath(os.path.join(out, "secret.txt"), sg.path("photos", "evil")),
               sg.path("photos", "evil/rel-link.txt"))
    os.symlink(out, sg.path("photos", "evil/dirlink"))
    with open(sg.path("photos", "evil/ok.txt"), "wb") as f:
        f.write(b"ok")
    os.symlink("ok.txt", sg.path("photos", "evil/inner-link.txt"))  # stays beneath: served
    rel_out = os.path.relpath(out, sg.dirs["photos"])  # "../outside"
    gets = ["/photos/../outside/secret.txt", f"/photos/{rel_out}/secret.txt", "/photos/%2e%2e/outside/secret.txt",
            "/photos/evil/..%2f..%2foutside%2fsecret.txt", "/photos/evil/%2E%2E/%2E%2E/outside/secret.txt",
            "/photos/evil/abs-link.txt", "/photos/evil/rel-link.txt", "/photos/evil/dirlink/secret.txt",
            "/photos/./evil/ok.txt", "/photos//evil/ok.txt", "/photos/evil/./ok.txt", "/../photos/evil/ok.txt"]
    for t in gets:
        st, _, body = sg.raw("GET", t)
        assert st in (400, 403, 404), (t, st, body[:200])
        assert b"outside secret" not in body
        if "-link" not in t:  # (a PUT onto a link replaces the link: below)
            st, _, body = sg.raw("PUT", t, body=b"pwned")
            assert st in (400, 403, 404), (t, st, body[:200])
    st, _, body = sg.raw("GET", "/photos/evil/inner-link.txt")
    assert st == 200 and body == b"ok"
    c = sg.boto()
    listed = [o["Key"] for o in c.list_objects_v2(Bucket="photos", Prefix="evil/")["Contents"]]
    assert listed == ["evil/inner-link.txt", "evil/ok.txt"]
    for k in ("evil/dirlink/new.txt", "evil/dirlink/secret.txt"):
        assert _client_error(c.put_object, Bucket="photos", Key=k, Body=b"pwned")[1] in (400, 403)
        assert _client_error(c.create_multipart_upload, Bucket="photos", Key=k)[1] in (400, 403)
        assert _client_error(c.copy_object, Bucket="photos", Key=k,
                             CopySource={"Bucket": "photos", "Key": "evil/ok.txt"})[1] in (400, 403)
    # a PUT onto a link to an outside file replaces the link, never the target
    c.put_object(Bucket="photos", Key="evil/abs-link.txt", Body=b"replaced")
    assert not os.path.islink(sg.path("photos", "evil/abs-link.txt"))
    assert c.get_object(Bucket="photos", Key="evil/abs-link.txt")["Body"].read() == b"replaced"
    # DELETE of a link removes the link, never its target
    c.delete_object(Bucket="photos", Key="evil/rel-link.txt")
    assert not os.path.lexists(sg.path("photos", "evil/rel-link.txt"))
    c.delete_object(Bucket="photos", Key="evil/dirlink/secret.txt")
    after = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    assert after == before
    assert _reserved_clean(sg.dirs["photos"]) == []


def test_file_and_directory_names_conflict(sg):
    """A file mount cannot hold both KEY and KEY/…: the second PUT is a 400
    InvalidRequest that leaves the first object as it was (no 500, no
    temporary file); a folder marker ("dir/", empty) is a directory that
    HEAD finds (with the ETag its PUT gave: the MD5 of nothing) and DELETE
    removes, and a folder marker with a body is
    refused rather than stored without its bytes."""
    c = sg.boto()
    c.put_object(Bucket="photos", Key="conflict/a", Body=b"file a")
    assert _client_error(c.put_object, Bucket="photos", Key="conflict/a/b", Body=b"x") == ("InvalidRequest", 400)
    c.put_object(Bucket="photos", Key="conflict/d/e", Body=b"file e")
    assert _client_error(c.put_object, Bucket="photos", Key="conflict/d", Body=b"x") == ("InvalidRequest", 400)
    assert _client_error(c.copy_object, Bucket="photos", Key="conflict/d",
                         CopySource={"Bucket": "photos", "Key": "conflict/a"}) == ("InvalidRequest", 400)
    assert _client_error(c.put_object, Bucket="photos", Key="conflict/a/", Body=b"") == ("InvalidRequest", 400)
    assert c.get_object(Bucket="photos", Key="conflict/a")["Body"].read() == b"file a"
    assert c.get_object(Bucket="photos", Key="conflict/d/e")["Body"].read() == b"file e"
    put = c.put_object(Bucket="photos", Key="conflict/folder/", Body=b"")
    assert os.path.isdir(sg.path("photos", "conflict/folder"))
    head = c.head_object(Bucket="photos", Key="conflict/folder/")
    assert head["ContentLength"] == 0
    assert head["ETag"] == put["ETag"] == '"%s"' % hashlib.md5(b"").hexdigest()  # what the PUT said
    assert _client_error(c.put_object, Bucket="photos", Key="conflict/withbody/", Body=b"bytes") == \
        ("InvalidRequest", 400)
    assert not os.path.exists(sg.path("photos", "conflict/withbody"))
    c.delete_object(Bucket="photos", Key="conflict/folder/")
    assert not os.path.exists(sg.path("photos", "conflict/folder"))
    assert _reserved_clean(sg.dirs["photos"]) == []


# ------------------------------------------------------------ atomicity ---

@pytest.mark.timeout_s(120)
def test_replace_is_atomic_under_concurrent_gets(sg):
    """A 30 MiB object replaced while read. Deterministically: a GET paused
    after its first MiB, across a whole PUT of another version, still
    delivers the old version whole (the new one is renamed into place; the
    open file stays the old one), and the next GET the new one. Under
    load: two readers GET in a loop while the object is replaced six times
    (versions alternating); every body is one version whole (SHA-256,
    length and ETag agree), and each GET that ran entirely between two
    PUTs is exactly the version last put — the writer waits for such a GET
    before each PUT (an event, not a sleep)."""
    c = sg.boto()
    key = "atomic/big.bin"
    a, b = os.urandom(30 * MIB), os.urandom(30 * MIB)
    va, vb = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
    etags = {va: '"%s"' % hashlib.md5(a).hexdigest(), vb: '"%s"' % hashlib.md5(b).hexdigest()}
    c.put_object(Bucket="photos", Key=key, Body=a)
    url = presign(sg.port, "GET", "/photos/" + key, 120)
    with harness.session().get(url, stream=True, timeout=60) as r:
        first = r.raw.read(MIB)
        c.put_object(Bucket="photos", Key=key, Body=b)
        assert hashlib.sha256(first + r.raw.read()).digest() == va
    assert hashlib.sha256(harness.session().get(url, timeout=60).content).digest() == vb

    cond = threading.Condition()
    state = {"gen": 0, "results": [], "stop": False}  # gen: 2 * PUTs done, odd while one runs

    def reader():
        rc = sg.boto()
        while True:
            with cond:
                if state["stop"]:
                    return
                g0 = state["gen"]
            try:
                r = rc.get_object(Bucket="photos", Key=key)
                body = r["Body"].read()
                res = (hashlib.sha256(body).digest(), len(body), r["ETag"])
            except Exception as e:  # noqa: BLE001 — recorded; the test fails on it
                res = (repr(e), 0, None)
            with cond:
                state["results"].append((g0, state["gen"], res))
                cond.notify_all()

    def stable_get_seen(gen):
        return any(g0 == g1 == gen for g0, g1, _ in state["results"])

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    expect = {0: vb}  # the version in place at each even gen
    try:
        for i in range(6):
            nxt = a if i % 2 == 0 else b
            with cond:
                assert cond.wait_for(lambda: stable_get_seen(state["gen"]), timeout=60)
                state["gen"] += 1
            c.put_object(Bucket="photos", Key=key, Body=nxt)
            with cond:
                state["gen"] += 1
                expect[state["gen"]] = hashlib.sha256(nxt).digest()
        with cond:
            assert cond.wait_for(lambda: stable_get_seen(state["gen"]), timeout=60)
    finally:
        with cond:
            state["stop"] = True
        for t in readers:
            t.join(60)
    for g0, g1, (h, n, etag) in state["results"]:
        assert h in etags and n == 30 * MIB and etag == etags[h], (g0, g1, h if isinstance(h, str) else n, etag)
        if g0 == g1 and g0 % 2 == 0:  # (odd: it ran during a PUT, either version is right)
            assert h == expect[g0], (g0, "a GET between two PUTs saw another version")
    assert c.get_object(Bucket="photos", Key=key)["Body"].read() == b  # the last PUT
    assert _reserved_clean(sg.dirs["photos"]) == []


def _fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _wait_for(cond, timeout=10):
    """Polls cond until true (a condition with a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.timeout_s(90)
def test_aborted_transfers_leave_nothing(sg):
    """A PUT whose client closes the socket mid-body (8 MiB of 16, and 36 of
    48 — past h2o's 32 MiB in-memory limit, where it spills to a mapped
    file), an aws-chunked PUT cut mid-chunk and an UploadPart cut mid-body
    leave no object, no part, no temporary file in the mount, and the
    gateway's open files return to what they were; so does a 30 MiB GET
    whose client goes away after 1 MiB. The same key then takes a whole
    PUT."""
    pid = sg.stack.gw.pid
    c = sg.boto()
    c.put_object(Bucket="photos", Key="abort/warm", Body=b"w")  # pools and the tmp dir exist before the baseline
    base_fds = _fd_count(pid)

    def cut(target, headers, body, send):
        h = {"host": f"127.0.0.1:{sg.port}", "content-length": str(len(body))}
        h.update(headers)
        payload = h.pop("x-amz-content-sha256", None) or "UNSIGNED-PAYLOAD"
        sign_headers("PUT", target, h, payload)
        s = socket.create_connection(("127.0.0.1", sg.port), timeout=30)
        try:
            head = f"PUT {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
            s.sendall(head.encode() + body[:send])
        finally:
            s.close()

    cut("/photos/abort/a.bin", {}, os.urandom(16 * MIB), 8 * MIB)
    cut("/photos/abort/b.bin", {}, os.urandom(48 * MIB), 36 * MIB)
    data = os.urandom(300 * 1024)
    enc = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (data[:100000], data[100000:]))
    cut("/photos/abort/c.bin", dict(_streaming_headers(len(data), {"x-amz-trailer": "x-amz-checksum-crc32c"}),
                                    **{"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}),
        enc + b"0\r\n", 150000)
    uid = c.create_multipart_upload(Bucket="photos", Key="abort/d.bin")["UploadId"]
    cut(f"/photos/abort/d.bin?partNumber=1&uploadId={uid}", {}, os.urandom(6 * MIB), 3 * MIB)
    # a download abandoned early
    c.put_object(Bucket="photos", Key="abort/dl.bin", Body=os.urandom(30 * MIB))
    url = presign(sg.port, "GET", "/photos/abort/dl.bin", 60)
    with harness.session().get(url, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert len(r.raw.read(MIB)) == MIB
    assert _wait_for(lambda: _fd_count(pid) <= base_fds), (_fd_count(pid), base_fds, os.listdir(f"/proc/{pid}/fd"))
    for k in ("a.bin", "b.bin", "c.bin", "d.bin"):
        assert _client_error(c.head_object, Bucket="photos", Key="abort/" + k) == ("404", 404)
    assert c.list_parts(Bucket="photos", Key="abort/d.bin", UploadId=uid).get("Parts", []) == []
    c.abort_multipart_upload(Bucket="photos", Key="abort/d.bin", UploadId=uid)
    assert sorted(os.listdir(sg.path("photos", "abort"))) == ["dl.bin", "warm"]
    assert _reserved_clean(sg.dirs["photos"]) == []
    c.put_object(Bucket="photos", Key="abort/a.bin", Body=b"whole")
    assert c.get_object(Bucket="photos", Key="abort/a.bin")["Body"].read() == b"whole"


# -------------------------------------------------------------- metrics ---

def test_metrics_count_operations(sg):
    """refract_s3_requests_total on the admin port counts each request once
    under its operation and status: 3 PUTs, 2 GETs, one 404 GET, one
    refused signature, one listing — exact deltas."""
    before = {k: sg.metric(*k) for k in [("PutObject", 200), ("GetObject", 200), ("GetObject", 404),
                                           ("ListObjectsV2", 200), ("HeadObject", 200)]}
    auth_before = harness.metric_value(sg.stack.metrics(), "refract_s3_requests_total", status="403") or 0
    for i in range(3):
        assert sg.raw("PUT", f"/photos/metrics/{i}", body=b"m%d" % i)[0] == 200
    for i in range(2):
        assert sg.raw("GET", f"/photos/metrics/{i}")[2] == b"m%d" % i
    assert sg.raw("GET", "/photos/metrics/none")[0] == 404
    assert sg.raw("HEAD", "/photos/metrics/0")[0] == 200
    assert sg.raw("GET", "/photos/metrics/0", secret="wrong")[0] == 403
    assert sg.raw("GET", "/photos?list-type=2&prefix=metrics%2F")[0] == 200
    after = {k: sg.metric(*k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {("PutObject", 200): 3, ("GetObject", 200): 2,
                                                          ("GetObject", 404): 1, ("ListObjectsV2", 200): 1,
                                                          ("HeadObject", 200): 1}
    auth_after = harness.metric_value(sg.stack.metrics(), "refract_s3_requests_total", status="403")
    assert auth_after - auth_before == 1
    text = sg.stack.metrics()
    out = harness.metric_value(text, "refract_s3_body_bytes_total", direction="out")
    assert out and out >= 4


def test_merged_mounts_listing_and_routing(sg):
    """A bucket over two root mounts and an /img mount lists as one key
    space: pages of 7 (v2 tokens, v1 markers) give every key exactly once
    in order though they alternate between the mounts; a key in both root
    mounts is listed once and read from the first declared; the root
    mount's own img/ directory is shadowed by the /img mount; with a
    delimiter each common prefix appears once; a new key is written to the
    first root mount, an img/ key to the /img mount."""
    c = sg.boto()
    got = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket="merged", PaginationConfig={"PageSize": 7}):
        got += [o["Key"] for o in page.get("Contents", [])]
    assert got == sg.merged_keys
    got, marker = [], ""
    while True:
        r = c.list_objects(Bucket="merged", MaxKeys=7, Marker=marker)
        got += [o["Key"] for o in r.get("Contents", [])]
        if not r["IsTruncated"]:
            break
        marker = got[-1]
    assert got == sg.merged_keys
    seen = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket="merged", Delimiter="/",
                                                             PaginationConfig={"PageSize": 3}):
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert seen == ["dir/", "img/"]
    assert c.get_object(Bucket="merged", Key="both.txt")["Body"].read() == b"from a"
    assert c.get_object(Bucket="merged", Key="p001")["Body"].read() == b"p1"  # only in b
    assert c.get_object(Bucket="merged", Key="img/sub/c2")["Body"].read() == b"c2"
    assert _client_error(c.get_object, Bucket="merged", Key="img/shadowed") == ("NoSuchKey", 404)
    c.put_object(Bucket="merged", Key="fresh.txt", Body=b"fresh")
    c.put_object(Bucket="merged", Key="img/fresh.txt", Body=b"img fresh")
    assert open(os.path.join(sg.dirs["merged-a"], "fresh.txt"), "rb").read() == b"fresh"
    assert open(os.path.join(sg.dirs["merged-img"], "fresh.txt"), "rb").read() == b"img fresh"
    # a key held by the second root mount is replaced there, not shadowed by a new copy in the first …
    c.put_object(Bucket="merged", Key="p001", Body=b"p1 again")
    assert c.get_object(Bucket="merged", Key="p001")["Body"].read() == b"p1 again"
    assert open(os.path.join(sg.dirs["merged-b"], "p001"), "rb").read() == b"p1 again"
    assert not os.path.exists(os.path.join(sg.dirs["merged-a"], "p001"))
    # … and a key both hold is gone after DELETE (b's copy does not show through)
    c.delete_object(Bucket="merged", Key="both.txt")
    assert _client_error(c.get_object, Bucket="merged", Key="both.txt") == ("NoSuchKey", 404)
    assert not os.path.exists(os.path.join(sg.dirs["merged-b"], "both.txt"))
    c.delete_objects(Bucket="merged", Delete={"Objects": [{"Key": "fresh.txt"}, {"Key": "img/fresh.txt"}]})
    assert [o["Key"] for o in c.list_objects_v2(Bucket="merged", Prefix="img/")["Contents"]] == ["img/c1", "img/sub/c2"]
    # as it was: test_listing_matches_s3_semantics lists this bucket too
    for d, data in (("merged-a", b"from a"), ("merged-b", b"from b")):
        with open(os.path.join(sg.dirs[d], "both.txt"), "wb") as f:
            f.write(data)


# -------------------------------------------------- protocol edge cases ---

def test_signature_edge_cases(sg):
    """What the verifier refuses, end to end, each with its S3 code and
    nothing written: a request dated 20 minutes ago (RequestTimeTooSkewed),
    an x-amz-meta header added after signing (AccessDenied), a body that is
    not the one whose SHA-256 was signed (XAmzContentSHA256Mismatch), an
    anonymous request (AccessDenied). An error's Resource names the
    request's path even when authentication failed."""
    st, _, body = sg.raw("PUT", "/photos/sig/old.txt", body=b"x", when=_now() - datetime.timedelta(minutes=20))
    assert st == 403 and xml_error(body)[0] == "RequestTimeTooSkewed"
    h = {"host": f"127.0.0.1:{sg.port}", "content-length": "1"}
    sign_headers("PUT", "/photos/sig/meta.txt", h, hashlib.sha256(b"x").hexdigest())
    h["x-amz-meta-injected"] = "yes"
    st, _, body = _send(sg, "PUT", "/photos/sig/meta.txt", h, b"x")
    assert st == 403 and xml_error(body)[0] == "AccessDenied"
    st, _, body = sg.raw("PUT", "/photos/sig/sha.txt", body=b"the body", payload=hashlib.sha256(b"another").hexdigest())
    assert st == 400 and xml_error(body)[0] == "XAmzContentSHA256Mismatch"
    st, _, body = sg.raw("GET", "/photos/sig/anon.txt", sign=False)
    assert st == 403 and xml_error(body)[0] == "AccessDenied"
    st, _, body = sg.raw("GET", "/photos/sig/wrong%20secret.txt", secret="nope")
    root = ET.fromstring(body)
    assert st == 403 and root.findtext("Code") == "SignatureDoesNotMatch"
    assert root.findtext("Resource") == "/photos/sig/wrong secret.txt"
    assert not os.path.exists(sg.path("photos", "sig"))


def test_http_framing(sg):
    """A PUT with plain Transfer-Encoding: chunked (length unknown to the
    client, UNSIGNED-PAYLOAD) stores the decoded bytes, as does one that
    signed Expect: 100-continue — headers h2o keeps out of its header list
    but clients sign; 204 (DELETE) and
    304 answers carry no Content-Length (RFC 9110) and the connection stays
    usable; HEAD of a missing key is a bodiless 404 with the reason in a
    header; GetBucketLocation and HeadBucket give the bucket's region."""
    data = harness.pattern_bytes(70000, seed=21)
    h = {"host": f"127.0.0.1:{sg.port}", "transfer-encoding": "chunked"}
    sign_headers("PUT", "/photos/framing/te.bin", h, "UNSIGNED-PAYLOAD")
    conn = http.client.HTTPConnection("127.0.0.1", sg.port, timeout=30)
    try:
        conn.putrequest("PUT", "/photos/framing/te.bin", skip_host=True, skip_accept_encoding=True)
        for k, v in h.items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(data), 8192):
            piece = data[i:i + 8192]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        assert r.status == 200, r.read()
        assert r.getheader("etag") == '"%s"' % hashlib.md5(data).hexdigest()
        r.read()
        # the same connection: a 304, then a 204, then a GET
        etag = '"%s"' % hashlib.md5(data).hexdigest()
        for method, target, extra, want in [("GET", "/photos/framing/te.bin", {"if-none-match": etag}, 304),
                                            ("DELETE", "/photos/framing/te.bin", {}, 204),
                                            ("GET", "/photos/framing/te.bin", {}, 404)]:
            hh = {"host": f"127.0.0.1:{sg.port}", **extra}
            sign_headers(method, target, hh, EMPTY_SHA256)
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in hh.items():
                conn.putheader(k, v)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
            assert r.status == want, (method, r.status, body)
            if want in (204, 304):
                assert r.getheader("content-length") is None and r.getheader("transfer-encoding") is None
                assert body == b""
    finally:
        conn.close()
    # Expect: 100-continue signed (h2o keeps it out of the header list, like Content-Length)
    st, h, body = sg.raw("PUT", "/photos/framing/expect.bin", body=data, headers={"expect": "100-continue"})
    assert st == 200, body
    assert sg.raw("GET", "/photos/framing/expect.bin")[2] == data
    st, h, body = sg.raw("HEAD", "/photos/framing/none")
    assert st == 404 and body == b"" and "does not exist" in h["x-refract-error"]
    c = sg.boto()
    assert c.get_bucket_location(Bucket="photos")["LocationConstraint"] == REGION
    assert c.head_bucket(Bucket="photos")["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == REGION


def test_presigned_put_and_boto3_presign(sg):
    """A boto3-presigned PUT (UNSIGNED-PAYLOAD) stores what plain requests
    sends; a boto3-presigned GET reads it back; the PUT URL used for
    another key is refused."""
    c = sg.boto()
    put = c.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": "presign/put.bin"}, ExpiresIn=60)
    data = os.urandom(50000)
    s = harness.session()
    r = s.put(put, data=data, timeout=10)
    assert r.status_code == 200, r.text
    get = c.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "presign/put.bin"}, ExpiresIn=60)
    r = s.get(get, timeout=10)
    assert r.status_code == 200 and r.content == data
    r = s.put(put.replace("presign/put.bin", "presign/other.bin"), data=b"x", timeout=10)
    assert r.status_code == 403 and xml_error(r.content)[0] == "SignatureDoesNotMatch"
    assert not os.path.exists(sg.path("photos", "presign/other.bin"))


def test_list_multipart_uploads_pages(sg):
    """ListMultipartUploads pages with max-uploads: a truncated page names
    NextKeyMarker / NextUploadIdMarker, and boto3's paginator (which
    follows them) sees every upload exactly once — two uploads of one key
    included — in key order."""
    c = sg.boto()
    made = []
    for k in ("mpl/a", "mpl/b", "mpl/b", "mpl/c", "mpl/d"):
        made.append((k, c.create_multipart_upload(Bucket="photos", Key=k)["UploadId"]))
    try:
        r = c.list_multipart_uploads(Bucket="photos", Prefix="mpl/", MaxUploads=2)
        assert r["IsTruncated"] and len(r["Uploads"]) == 2
        assert (r["NextKeyMarker"], r["NextUploadIdMarker"]) == (r["Uploads"][1]["Key"], r["Uploads"][1]["UploadId"])
        seen = []
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket="photos", Prefix="mpl/",
                                                                       PaginationConfig={"PageSize": 2}):
            seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
        assert [k for k, _ in seen] == sorted(k for k, _ in made)
    finally:
        for k, uid in made:
            c.abort_multipart_upload(Bucket="photos", Key=k, UploadId=uid)
    assert not c.list_multipart_uploads(Bucket="photos", Prefix="mpl/").get("Uploads")


def test_aws_chunked_signed_trailer(sg):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: signed chunks, then an
    x-amz-checksum-crc32 trailer with its own trailer signature (computed
    here per AWS's documentation): stored byte-exact; a trailer whose
    signature is wrong is refused and stores nothing."""
    data = harness.pattern_bytes(90000, seed=31)

    def put(key, bad_trailer_sig=False):
        target = "/photos/" + key
        chunk = 32 * 1024
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
        trailer = f"x-amz-checksum-crc32:{b64_be32(zlib.crc32(data))}"
        # the framing's length does not depend on the signatures' values
        enc_len = sum(len(f"{len(p):x};chunk-signature=".encode()) + 64 + 2 + len(p) + 2 for p in pieces) - 2
        enc_len += len(trailer) + 2 + len("x-amz-trailer-signature:") + 64 + 2 + 2
        h = {"host": f"127.0.0.1:{sg.port}", "content-length": str(enc_len)}
        h.update(_streaming_headers(len(data), {"x-amz-trailer": "x-amz-checksum-crc32"}))
        prev, amz_date, key_, scope = sign_headers("PUT", target, h, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
        out = []
        for p in pieces:
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                             hashlib.sha256(p).hexdigest()])
            prev = hmac.new(key_, sts.encode(), hashlib.sha256).hexdigest()
            out.append(f"{len(p):x};chunk-signature={prev}\r\n".encode() + p + (b"\r\n" if p else b""))
        sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev,
                         hashlib.sha256((trailer + "\n").encode()).hexdigest()])
        tsig = hmac.new(key_, sts.encode(), hashlib.sha256).hexdigest()
        if bad_trailer_sig:
            tsig = ("1" if tsig[0] == "0" else "0") + tsig[1:]
        out.append(f"{trailer}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n".encode())
        body = b"".join(out)
        assert len(body) == enc_len
        return _send(sg, "PUT", target, h, body)

    st, h, body = put("chunked/strailer.bin")
    assert st == 200, body
    assert sg.raw("GET", "/photos/chunked/strailer.bin")[2] == data
    st, _, body = put("chunked/strailer-bad.bin", bad_trailer_sig=True)
    assert st == 403 and xml_error(body)[0] == "SignatureDoesNotMatch", body
    assert sg.raw("GET", "/photos/chunked/strailer-bad.bin")[0] == 404


def test_versions_and_part_numbers(sg):
    """Buckets keep no versions and objects no part boundaries, and say so
    instead of answering something else: ?versions is 501 NotImplemented
    (not a ListObjects answer a client would read as "no versions");
    versionId "null" is the object, any other id InvalidArgument for GET
    and DELETE (which then deletes nothing); partNumber=1 is the whole
    object and partNumber=2 InvalidPartNumber (416) — a client fetching the
    parts of a multipart object in parallel must not get it N times."""
    c = sg.boto()
    c.put_object(Bucket="photos", Key="ver/v.txt", Body=b"only version")
    assert _client_error(c.list_object_versions, Bucket="photos") == ("NotImplemented", 501)
    assert c.get_object(Bucket="photos", Key="ver/v.txt", VersionId="null")["Body"].read() == b"only version"
    assert _client_error(c.get_object, Bucket="photos", Key="ver/v.txt", VersionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")\
        == ("InvalidArgument", 400)
    assert _client_error(c.delete_object, Bucket="photos", Key="ver/v.txt", VersionId="abc") == ("InvalidArgument", 400)
    assert os.path.exists(sg.path("photos", "ver/v.txt"))
    g = c.get_object(Bucket="photos", Key="ver/v.txt", PartNumber=1)
    assert g["Body"].read() == b"only version"
    assert _client_error(c.get_object, Bucket="photos", Key="ver/v.txt", PartNumber=2) == ("InvalidPartNumber", 416)
    assert _client_error(c.head_object, Bucket="photos", Key="ver/v.txt", PartNumber=2) == ("416", 416)


def test_key_limits_and_control_characters(sg):
    """Keys of 1023 and 1024 bytes (S3's limit) are stored, listed and read;
    1025 bytes is KeyTooLongError; a segment longer than a file name (255
    bytes) is a 400 for PUT and a 404 for GET, not a 500; keys holding
    newline, carriage return and other control characters round-trip
    through PUT, listing and GET — and through a multipart upload, whose
    listing, key and Content-Type stay intact."""
    c = sg.boto()
    k1023 = "limits/" + "/".join(["x" * 200] * 5) + "/" + "y" * 11
    k1024 = k1023[:-1] + "zz"
    assert (len(k1023.encode()), len(k1024.encode())) == (1023, 1024)
    for k in (k1023, k1024):
        c.put_object(Bucket="photos", Key=k, Body=k[-2:].encode())
    listed = [o["Key"] for o in c.list_objects_v2(Bucket="photos", Prefix="limits/")["Contents"]]
    assert listed == sorted([k1023, k1024])
    assert c.get_object(Bucket="photos", Key=k1024)["Body"].read() == b"zz"
    assert _client_error(c.put_object, Bucket="photos", Key=k1024 + "z", Body=b"x") == ("KeyTooLongError", 400)
    assert _client_error(c.put_object, Bucket="photos", Key="limits/" + "q" * 256, Body=b"x") == \
        ("InvalidArgument", 400)
    assert _client_error(c.get_object, Bucket="photos", Key="limits/" + "q" * 256) == ("NoSuchKey", 404)
    c.put_object(Bucket="photos", Key="limits/" + "q" * 255, Body=b"255")
    odd = "limits/ctl/a\nb\rc\x01d\te"
    c.put_object(Bucket="photos", Key=odd, Body=b"ctl")
    assert [o["Key"] for o in c.list_objects_v2(Bucket="photos", Prefix="limits/ctl/")["Contents"]] == [odd]
    assert c.get_object(Bucket="photos", Key=odd)["Body"].read() == b"ctl"
    mk = "limits/ctl/multi\npart"
    uid = c.create_multipart_upload(Bucket="photos", Key=mk, ContentType="text/x-nl")["UploadId"]
    ups = c.list_multipart_uploads(Bucket="photos", Prefix="limits/ctl/")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in ups] == [(mk, uid)]
    e = c.upload_part(Bucket="photos", Key=mk, UploadId=uid, PartNumber=1, Body=b"nl part")["ETag"]
    c.complete_multipart_upload(Bucket="photos", Key=mk, UploadId=uid,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
    g = c.get_object(Bucket="photos", Key=mk)
    assert g["Body"].read() == b"nl part" and g["ContentType"] == "text/x-nl"
    # an upload id is bound to its key: "multi" (the key up to the newline) does not own it
    uid2 = c.create_multipart_upload(Bucket="photos", Key=mk)["UploadId"]
    assert _client_error(c.upload_part, Bucket="photos", Key="limits/ctl/multi", UploadId=uid2, PartNumber=1,
                         Body=b"x")[0] == "NoSuchUpload"
    c.abort_multipart_upload(Bucket="photos", Key=mk, UploadId=uid2)


def _model_listing(keys, prefix, delim):
    """S3's listing semantics, for comparison: keys in byte order, those
    holding the delimiter after the prefix rolled up into one common
    prefix each."""
    out = []
    for k in sorted(keys, key=lambda k: k.encode()):
        if not k.startswith(prefix):
            continue
        i = k.find(delim, len(prefix)) if delim else -1
        if i >= 0:
            cp = ("p", k[:i + len(delim)])
            if cp not in out:
                out.append(cp)
            continue
        out.append(("k", k))
    return out


def _paged_listing(c, bucket, prefix, delim, page, v1=False):
    got, token = [], None
    for _ in range(5000):
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page}
        if delim:
            kw["Delimiter"] = delim
        if v1:
            if token:
                kw["Marker"] = token
            r = c.list_objects(**kw)
        else:
            if token:
                kw["ContinuationToken"] = token
            r = c.list_objects_v2(**kw)
        entries = [("k", o["Key"]) for o in r.get("Contents", [])] + \
                  [("p", p["Prefix"]) for p in r.get("CommonPrefixes", [])]
        assert len(entries) <= page
        got += sorted(entries, key=lambda e: e[1].encode())
        if not r["IsTruncated"]:
            return got
        token = r.get("NextMarker") if v1 else r["NextContinuationToken"]
        assert token
    raise AssertionError("listing does not end")


@pytest.mark.timeout_s(120)
def test_listing_matches_s3_semantics(sg):
    """Listings of the 2500-key bucket and of the bucket merged from three
    mounts equal S3's semantics computed here, for delimiters that are and
    are not '/' (multi-byte ones included), prefixes that end inside a
    name, at a '/', or match nothing, and page sizes that cut pages inside
    a run of common prefixes — v2 tokens and v1 markers alike."""
    c = sg.boto()
    cases = [("many", "", "/", 7), ("many", "d1", "/", 4), ("many", "d0", "f0", 9), ("many", "x", "", 1),
             ("many", "x", "/", 1), ("many", "x", ".", 2), ("many", "top", "1", 3), ("many", "d05/f0", "9", 2),
             ("many", "nothing", "/", 5), ("many", "", "0/", 5), ("many", "d2", "", 30),
             ("merged", "", "/", 2), ("merged", "p", "0", 3), ("merged", "", "", 11), ("merged", "img", "/", 1),
             ("merged", "img/", "/", 1), ("merged", "", "p0", 4), ("merged", "d", "", 1)]
    for bucket, prefix, delim, page in cases:
        keys = sg.many_keys if bucket == "many" else sg.merged_keys
        want = _model_listing(keys, prefix, delim)
        for v1 in (False, True):
            got = _paged_listing(c, bucket, prefix, delim, page, v1)
            assert got == want, (bucket, prefix, delim, page, v1, got[:10], want[:10])


def test_max_put_bounds_the_object(make_stack, tmp_path):
    """storgate.max_put bounds the object, not just the bytes received: a
    body of exactly max_put is stored; one a little larger (inside the
    slack h2o allows for aws-chunked framing) is EntityTooLarge in S3 XML,
    plain or aws-chunked, and stores nothing — its temporary file is gone
    before the answer is sent, so the check right after the answer sees
    none; one far larger is refused by h2o before any handler runs (413)."""
    mount, site = tmp_path / "m", tmp_path / "site"
    mount.mkdir()
    site.mkdir()
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(site)}], workers=0,
                    storgate={"max_put": "1MB", "credentials": [{"access_key": AK, "secret_key": SK}],
                              "buckets": [{"meta": {"name": "small"}, "mounts": [{"originPath": str(mount)}]}]})
    env = S3Env.__new__(S3Env)
    env.port, env.stack = st.s3_port, st
    st_, _, body = env.raw("PUT", "/small/exact", body=b"e" * MIB)
    assert st_ == 200, body
    assert os.path.getsize(mount / "exact") == MIB
    for _ in range(5):  # (the cleanup raced the answer: 2 runs in 3 saw the file)
        st_, _, body = env.raw("PUT", "/small/over", body=b"o" * (MIB + 1000))
        assert st_ == 413 and xml_error(body)[0] == "EntityTooLarge"
        assert _reserved_clean(str(mount)) == []
    data = b"c" * (MIB + 1000)
    enc = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (data[:600000], data[600000:]))
    enc += b"0\r\n" + f"x-amz-checksum-crc32:{b64_be32(zlib.crc32(data))}\r\n".encode() + b"\r\n"
    h = {"host": f"127.0.0.1:{env.port}", "content-length": str(len(enc))}
    h.update(_streaming_headers(len(data), {"x-amz-trailer": "x-amz-checksum-crc32"}))
    sign_headers("PUT", "/small/chunked-over", h, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    st_, _, body = _send(env, "PUT", "/small/chunked-over", h, enc)
    assert st_ == 413 and xml_error(body)[0] == "EntityTooLarge"
    assert _reserved_clean(str(mount)) == []
    # h2o answers from the headers alone and closes: send them, read the answer
    h = {"host": f"127.0.0.1:{env.port}", "content-length": str(2 * MIB)}
    sign_headers("PUT", "/small/far-over", h, "UNSIGNED-PAYLOAD")
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(("PUT /small/far-over HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) +
                   "\r\n").encode())
        assert s.recv(100).startswith(b"HTTP/1.1 413 ")
    assert sorted(os.listdir(mount)) == [".refract-s3", "exact"]
    assert _reserved_clean(str(mount)) == []


def test_malformed_requests_answer_s3_errors(sg):
    """A battery of malformed but signed requests — bad query values, copy
    sources, ranges, digests, checksums, upload ids, part numbers, XML
    bodies, aws-chunked framing — each gets a 4xx S3 XML error naming a
    code (never a 5xx, never a dropped connection), nothing is written,
    and the gateway lives on (the suite also runs this under ASan)."""
    sg.raw("PUT", "/photos/mal/src.txt", body=b"source")
    uid = sg.boto().create_multipart_upload(Bucket="photos", Key="mal/mpu")["UploadId"]
    cases = [
        ("GET", "/photos?list-type=2&max-keys=abc", b"", {}),
        ("GET", "/photos?list-type=2&max-keys=-1", b"", {}),
        ("GET", "/photos?list-type=2&continuation-token=%25%25%25", b"", {}),
        ("GET", "/photos?list-type=2&continuation-token=AAAA", b"", {}),
        ("GET", "/photos?encoding-type=base64", b"", {}),
        ("GET", "/photos?" + "&".join(f"p{i}=1" for i in range(70)), b"", {}),
        ("GET", "/photos/mal/src.txt?partNumber=0", b"", {}),
        ("GET", "/photos/mal/src.txt?partNumber=1a", b"", {}),
        ("GET", "/photos/mal/src.txt", b"", {"range": "bytes=100-200"}),
        ("PUT", "/photos/mal/x", b"abc", {"content-md5": "not base64!"}),
        ("PUT", "/photos/mal/x", b"abc", {"content-md5": "AAAA"}),
        ("PUT", "/photos/mal/x", b"abc", {"x-amz-checksum-crc32": "A" * 100}),
        ("PUT", "/photos/mal/x", b"abc", {"x-amz-checksum-md99": "AAAA"}),
        ("PUT", "/photos/mal/x", b"abc", {"x-amz-meta-a": "x" * 3000}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "photos"}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "/photos/"}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "nosuch/mal/src.txt"}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "photos/mal/%2e%2e/%2e%2e/etc/passwd"}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "photos/mal/src.txt%zz"}),
        ("PUT", "/photos/mal/x", b"", {"x-amz-copy-source": "photos/mal/src%00.txt"}),
        ("PUT", "/photos/mal/x?partNumber=1", b"abc", {}),
        ("PUT", f"/photos/mal/mpu?partNumber=0&uploadId={uid}", b"abc", {}),
        ("PUT", f"/photos/mal/mpu?partNumber=10001&uploadId={uid}", b"abc", {}),
        ("PUT", "/photos/mal/mpu?partNumber=1&uploadId=../../../etc", b"abc", {}),
        ("PUT", f"/photos/mal/mpu?partNumber=1&uploadId={uid}", b"",
         {"x-amz-copy-source": "photos/mal/src.txt", "x-amz-copy-source-range": "bytes=5-100"}),
        ("POST", f"/photos/mal/mpu?uploadId={uid}", b"<CompleteMultipartUpload>", {}),
        ("POST", f"/photos/mal/mpu?uploadId={uid}",
         b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><CompleteMultipartUpload/>', {}),
        ("POST", f"/photos/mal/mpu?uploadId={uid}", b"<CompleteMultipartUpload></CompleteMultipartUpload>", {}),
        ("POST", f"/photos/mal/mpu?uploadId={uid}",
         b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>x</ETag></Part>"
         b"<Part><PartNumber>1</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>", {}),
        ("POST", "/photos/mal/mpu", b"", {}),
        ("POST", "/photos?delete", b"<Delete><Object></Object></Delete>", {}),
        ("POST", "/photos?delete", b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>", {}),
        ("PATCH", "/photos/mal/src.txt", b"", {}),
        ("DELETE", "/photos", b"", {}),
        ("PUT", "/photos/mal/x", b"5\r\nabc", {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": "3"}),
    ]
    for method, target, body, headers in cases:
        payload = None
        if headers.get("content-encoding") == "aws-chunked":
            payload = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
            headers = dict(headers, **{"x-amz-trailer": "x-amz-checksum-crc32"})
        st, h, rb = sg.raw(method, target, body=body, headers=headers, payload=payload)
        assert 400 <= st < 500, (method, target, headers, st, rb[:300])
        code, msg = xml_error(rb)
        assert code and msg, (method, target, rb[:300])
    c = sg.boto()
    assert [o["Key"] for o in c.list_objects_v2(Bucket="photos", Prefix="mal/")["Contents"]] == ["mal/src.txt"]
    assert c.list_parts(Bucket="photos", Key="mal/mpu", UploadId=uid).get("Parts", []) == []
    assert c.get_object(Bucket="photos", Key="mal/src.txt")["Body"].read() == b"source"
    c.abort_multipart_upload(Bucket="photos", Key="mal/mpu", UploadId=uid)
    assert _reserved_clean(sg.dirs["photos"]) == []
