"""An OpenStack Swift "all in one" with the S3 API, for integration tests.

`Swift(workdir)` wraps scripts/swift-aio.sh: `start()` writes configs, rings
and data under workdir and starts memcached, the account, container and
object servers and the proxy (s3api + tempauth) on loopback ports, and
returns once an S3 ListBuckets succeeds (a few seconds); `stop()` stops them
(idempotent). As a context manager it starts on entry and stops on exit.

    with Swift(str(tmp_path / "swift")) as sw:
        s3 = sw.client()               # boto3, path-style, SigV4
        s3.create_bucket(Bucket="b")
        ...                            # or sw.s3_endpoint, sw.access_key,
                                       # sw.secret_key, sw.region

The S3 credentials are tempauth's `test:tester` / `testing`; the region is
ap-northeast-2 (s3api refuses a signature for any other). The Swift API is
there too: sw.swift_auth_url (v1 auth, user test:tester, key testing).
Only stdlib, plus boto3 for client().
"""
import os
import socket
import subprocess

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(REPO, "scripts", "swift-aio.sh")
PROXY_BIN = "/usr/bin/swift-proxy-server"


def installed():
    """True when Debian's Swift packages are installed (scripts/deps.sh)."""
    return os.access(PROXY_BIN, os.X_OK)


def _free_port():
    """A loopback port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Swift:
    """A Swift AIO under `workdir`, its proxy (S3 and Swift API) on `port`
    (a free one by default). Its logs are in workdir/log/."""

    def __init__(self, workdir, port=None, timeout=60):
        self.workdir = os.path.abspath(workdir)
        self.port = port
        self.timeout = timeout
        self.s3_endpoint = None
        self.access_key = None
        self.secret_key = None
        self.region = None
        self.swift_auth_url = None
        self.env = {}

    def start(self):
        """Starts Swift (restarting it if this workdir runs one); raises
        RuntimeError, with the script's output, when it does not come up."""
        os.makedirs(self.workdir, exist_ok=True)
        if self.port is None:
            self.port = _free_port()
        r = subprocess.run([SCRIPT, "start", self.workdir, str(self.port)], capture_output=True,
                           text=True, timeout=self.timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"swift-aio.sh start failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        with open(os.path.join(self.workdir, "env")) as f:
            self.env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        self.s3_endpoint = self.env["S3_ENDPOINT"]
        self.region = self.env["S3_REGION"]
        self.access_key = self.env["AWS_ACCESS_KEY_ID"]
        self.secret_key = self.env["AWS_SECRET_ACCESS_KEY"]
        self.swift_auth_url = self.env["SWIFT_AUTH_URL"]
        return self

    def stop(self):
        """Stops every process start() started (nothing when none runs)."""
        subprocess.run([SCRIPT, "stop", self.workdir], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL, check=True)

    def client(self, **config):
        """A boto3 S3 client for this Swift: path-style, SigV4, its region;
        `config` adds botocore Config options."""
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.s3_endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", **config))

    def logs(self, lines=50):
        """The last `lines` lines of each server's log, for failure reports."""
        d = os.path.join(self.workdir, "log")
        out = []
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), errors="replace") as f:
                out.append(f"==> {name} <==\n" + "".join(f.readlines()[-lines:]))
        return "\n".join(out)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
