"""Content chain (seed <VhostLink Condition="404">): on listed origin
statuses the same path is asked of another vhost's origin; loops, self
links and missing targets are refused when the config loads."""
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
        with open(p, "w") as f:
            f.write(text)
        os.utime(p, (day, day))
    return d


@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("link"))
    a = harness.Origin(_site(os.path.join(base, "a"), {"only-a.txt": "from a\n"}))
    b = harness.Origin(_site(os.path.join(base, "b"), {"only-b.txt": "from b\n", "only-a.txt": "b's copy\n"}))
    c = harness.Origin(_site(os.path.join(base, "c"), {"only-c.txt": "from c\n"}))
    yield a, b, c
    for o in (a, b, c):
        o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origins):
    a, b, c = origins
    st = harness.Stack(
        str(tmp_path_factory.mktemp("link-stack")),
        vhosts=[
            {"name": "a.test", "default": True, "origin": a.url, "link": {"vhost": "b.test", "condition": "404, 5xx"}},
            {"name": "b.test", "origin": b.url, "link": {"vhost": "c.test", "condition": "404"}},
            {"name": "c.test", "origin": c.url},
        ],
        gateway={"admin_token": "tok"},
        workers=0,
    )
    yield st
    st.close()


def test_404_follows_the_link(stack, origins):
    a, b, c = origins
    r = stack.get("/only-b.txt", host="a.test")
    assert r.status_code == 200 and r.text == "from b\n", (r.status_code, r.text)
    assert any(q["path"] == "/only-b.txt" for q in a.requests) and any(q["path"] == "/only-b.txt" for q in b.requests)
    # kept under a.test's key: the next request is a hit, no origin asked
    n = len(a.requests) + len(b.requests)
    r2 = stack.get("/only-b.txt", host="a.test")
    assert r2.text == "from b\n" and "hit" in r2.headers["Cache-Status"]
    assert len(a.requests) + len(b.requests) == n


def test_link_followed_again_on_refresh(stack, origins):
    # an expired linked object is refreshed through the chain, not replaced
    # by the first origin's 404
    stack.get("/only-b.txt", host="a.test")
    r = harness.http("POST", stack.admin("/expire?url=http://a.test/only-b.txt"),
                     headers={"Authorization": "Bearer tok"})
    assert r.status_code == 200 and r.json()["results"][0]["objects"] == 1, r.text
    r2 = stack.get("/only-b.txt", host="a.test")
    assert r2.status_code == 200 and r2.text == "from b\n", (r2.status_code, r2.text)


def test_a_found_object_does_not_follow(stack):
    r = stack.get("/only-a.txt", host="a.test")
    assert r.text == "from a\n"


def test_chain_of_two_links(stack, origins):
    r = stack.get("/only-c.txt", host="a.test")
    assert r.status_code == 200 and r.text == "from c\n"


def test_last_answer_passes_through_when_nothing_has_it(stack):
    r = stack.get("/nowhere.txt", host="a.test")
    assert r.status_code == 404


def test_5xx_condition(stack, origins):
    # /_status/503 on a answers 503: the link (404, 5xx) asks b, whose /_status/503 is 503 too;
    # b links only on 404, so b's 503 is the answer
    r = stack.get("/_status/503", host="a.test")
    assert r.status_code == 503
    a, b, c = origins
    assert any(q["path"] == "/_status/503" for q in b.requests)
    assert not any(q["path"] == "/_status/503" for q in c.requests)


@pytest.mark.parametrize("links,message,condition", [
    ({"a": "b", "b": "a"}, "content chain loop", "404"),
    ({"a": "a"}, "content chain loop", "404"),
    ({"a": "nope"}, "which is not a vhost", "404"),
    ({"a": "b"}, "3xx, 4xx or 5xx", "200"),
    ({"a": "b"}, "3xx, 4xx or 5xx", "1xx"),
])
def test_bad_links_refused_at_load(tmp_path, links, message, condition):
    vhosts = []
    for name in ("a", "b"):
        v = {"name": name, "origin": "http://127.0.0.1:9"}
        if name in links:
            v["link"] = {"vhost": links[name], "condition": condition}
        vhosts.append(v)
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"}, "vhosts": vhosts}
    path = tmp_path / "bad.yaml"
    path.write_text(harness.to_yaml(cfg) + "\n")
    p = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and message in p.stderr, p.stderr


def test_link_to_a_file_origin_refused(tmp_path):
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"},
           "vhosts": [{"name": "a", "origin": "http://127.0.0.1:9", "link": {"vhost": "f", "condition": "404"}},
                      {"name": "f", "origin": "file:///tmp"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(harness.to_yaml(cfg) + "\n")
    p = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(path)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "http(s) origin" in p.stderr, p.stderr
