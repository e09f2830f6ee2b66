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
                         ("site", "photos", "hidden", "outside", "locked", "dropbox", "many", "clients")}
        for p in d.values():
            os.makedirs(p, exist_ok=True)
        self.many_keys = _fill_many(d["many"])
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
    assert names == ["dropbox", "locked", "many", "photos"], out
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
    get_object as sent; a second put replaces them (nothing merges)."""
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
    completed object equals the source."""
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
