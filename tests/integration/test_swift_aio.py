"""The Swift AIO harness (tests/integration/swift.py, scripts/swift-aio.sh)
works: Swift starts, its S3 API takes a bucket and an object from boto3
(path-style, SigV4) and gives the same bytes back and lists them, and stop()
stops it. S3-backed mounts of storgate are tested against this Swift.
"""
import hashlib
import os
import socket

import pytest

import swift


@pytest.mark.timeout_s(45)
def test_swift_aio_s3_put_get_list(tmp_path):
    """Start, CreateBucket, PutObject, GetObject (byte-exact), ListObjectsV2, stop."""
    if not swift.installed():
        pytest.skip("OpenStack Swift is not installed (scripts/deps.sh installs it)")
    data = os.urandom(3 * 1024 * 1024 + 17) + bytes(range(256))
    sw = swift.Swift(str(tmp_path / "swift"))
    with sw:
        assert sw.s3_endpoint.startswith("http://127.0.0.1:")
        assert (sw.access_key, sw.secret_key, sw.region) == ("test:tester", "testing", "ap-northeast-2")
        s3 = sw.client()
        s3.create_bucket(Bucket="harness", CreateBucketConfiguration={"LocationConstraint": sw.region})
        assert "harness" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        put = s3.put_object(Bucket="harness", Key="dir/obj.bin", Body=data, ContentType="application/x-test")
        assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()

        got = s3.get_object(Bucket="harness", Key="dir/obj.bin")
        assert got["Body"].read() == data
        assert got["ContentType"] == "application/x-test"
        part = s3.get_object(Bucket="harness", Key="dir/obj.bin", Range="bytes=10-19")["Body"].read()
        assert part == data[10:20]

        listing = s3.list_objects_v2(Bucket="harness", Prefix="dir/")
        assert [(o["Key"], o["Size"]) for o in listing["Contents"]] == [("dir/obj.bin", len(data))]
        top = s3.list_objects_v2(Bucket="harness", Delimiter="/")
        assert [p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["dir/"]
    with socket.socket() as s:  # stopped: the proxy's port no longer answers
        assert s.connect_ex(("127.0.0.1", sw.port)) != 0, sw.logs()
    sw.stop()  # idempotent
