"""url_rewrite (seed <URLRewrite AccessLog="Replace">, PCRE2 with #1..#9,
before the vhost is chosen) and bypass (seed BypassGetRequest + bypass.txt
with ", cache" exceptions)."""
import os
import subprocess
import time

import pytest

import harness


def _site(d, files):
    os.makedirs(d, exist_ok=True)
    day = time.time() - 86400
    for name, text in files.items():
        p = os.path.join(d, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.utime(p, (day, day))
    return d


@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("rw"))
    www = harness.Origin(_site(os.path.join(base, "www"), {"page.txt": "www page\n", "big.bin": "B" * 5000,
                                                           "patch1.zip": "P" * 100, "other.txt": "o\n"}))
    shop = harness.Origin(_site(os.path.join(base, "shop"), {"item/1.txt": "shop item 1\n", "x.txt": "shop x\n"}))
    yield www, shop
    www.close()
    shop.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origins):
    www, shop = origins
    st = harness.Stack(
        str(tmp_path_factory.mktemp("rw-stack")),
        vhosts=[
            {"name": "www.example.com", "default": True, "origin": www.url},
            {"name": "shop.example.com", "origin": shop.url},
            {"name": "dl.example.com", "origin": www.url,
             "bypass": {"get": True, "post": True, "rules": ["/big.bin, cache", "/patch*.zip, cache"]}},
            {"name": "api.example.com", "origin": www.url, "bypass": {"rules": ["/other.txt"]}},
        ],
        workers=0,
        log_level="info",
    )
    st.config["url_rewrite"] = [
        {"pattern": r"^www\.example\.com/m2/([^/]+)/(.*)", "replace": "#1.example.com/#2", "access_log": "replace"},
        {"pattern": r"^www\.example\.com/old/(.*)", "replace": "www.example.com/#1"},
        {"pattern": r"^www\.example\.com/escape/(.*)", "replace": "shop.example.com/../../#1"},
        {"pattern": r"^www\.example\.com/(.*)", "replace": "never.example.com/#1"},  # a later rule never sees /m2/
    ]
    st.write_config()
    st.gw.stop()
    st.start_gateway()
    yield st
    st.close()


def test_rewrite_routes_to_another_vhost(stack, origins):
    www, shop = origins
    r = stack.get("/m2/shop/item/1.txt", host="www.example.com")
    assert r.status_code == 200 and r.text == "shop item 1\n", (r.status_code, r.text)
    assert any(q["path"] == "/item/1.txt" for q in shop.requests)
    # the Host's port does not take part in the subject
    r = stack.get("/m2/shop/x.txt", host="www.example.com:8080")
    assert r.text == "shop x\n"


def test_access_log_replace_and_original(stack):
    stack.get("/m2/shop/x.txt", host="www.example.com")
    stack.get("/old/page.txt", host="www.example.com")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        log = stack.gw.log()
        if "shop.example.com/x.txt" in log and "/old/page.txt" in log:
            break
        time.sleep(0.05)
    assert " shop.example.com shop.example.com/x.txt 200" in log, log[-2000:]
    assert " www.example.com /old/page.txt 200" in log, log[-2000:]


def test_groups_and_first_match_wins(stack):
    r = stack.get("/old/page.txt", host="www.example.com")
    assert r.status_code == 200 and r.text == "www page\n"


def test_unmatched_host_is_untouched(stack):
    r = stack.get("/x.txt", host="shop.example.com")
    assert r.text == "shop x\n"


def test_rewrite_cannot_climb(stack, origins):
    r = stack.get("/escape/etc/passwd", host="www.example.com")
    assert r.status_code == 400 and "url_rewrite made a bad path" in r.text


def test_bad_pattern_refused_at_load(tmp_path):
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"},
           "url_rewrite": [{"pattern": r"example.com/.*\.(jpg|png).*)", "replace": "example.com/#1/dims/optimize"}],
           "vhosts": [{"name": "a", "origin": "http://127.0.0.1:9"}]}
    p = tmp_path / "bad.yaml"
    p.write_text(harness.to_yaml(cfg) + "\n")
    out = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "url_rewrite[0]" in out.stderr and "parenthesis" in out.stderr, out.stderr


def test_bypass_get_with_cache_exceptions(stack, origins):
    www, _ = origins
    for path, cached in (("/page.txt", False), ("/big.bin", True), ("/patch1.zip", True)):
        n = sum(1 for q in www.requests if q["path"] == path)
        stack.get(path, host="dl.example.com")
        r = stack.get(path, host="dl.example.com")
        assert r.status_code == 200
        seen = sum(1 for q in www.requests if q["path"] == path) - n
        if cached:
            assert "hit" in r.headers["Cache-Status"] and seen == 1, (path, r.headers["Cache-Status"], seen)
        else:
            assert r.headers["Cache-Status"] == "refract; fwd=bypass" and seen == 2, (path, seen)


def test_bypass_rule_without_get(stack, origins):
    r1 = stack.get("/other.txt", host="api.example.com")
    r2 = stack.get("/other.txt", host="api.example.com")
    assert r2.headers["Cache-Status"] == "refract; fwd=bypass"
    stack.get("/page.txt", host="api.example.com")
    assert "hit" in stack.get("/page.txt", host="api.example.com").headers["Cache-Status"]
    assert r1.status_code == 200


def test_bypass_post_off_is_refused(tmp_path):
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"},
           "vhosts": [{"name": "a", "origin": "http://127.0.0.1:9", "bypass": {"post": False}}]}
    p = tmp_path / "bad.yaml"
    p.write_text(harness.to_yaml(cfg) + "\n")
    out = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "bypass.post" in out.stderr, out.stderr
