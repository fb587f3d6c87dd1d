"""The labeling page's server (rlkit2/label_server.py) over HTTP on 127.0.0.1: the page and its controls, leasing
and answering, clips rendered lazily once, nothing outside the clip folder served, malformed, forged or replayed
requests answered with a JSON 4xx that changes nothing, no state change by GET or from another web page, a cap on
one rater's leases, and a stalled client dropped while others are served."""

import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from rlkit2.label_server import LabelServer, segment_renderer


def start(srv):
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def stop(srv):
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(**kwargs):
        rendered = []

        def renderer(name, path):
            if not name.startswith("seg"):
                raise KeyError(name)
            rendered.append(name)
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42fake-" + name.encode())

        srv = LabelServer(tmp_path / "run", port=0, renderer=renderer, instructions="Prefer the <faster> cheetah.",
                          **kwargs)
        srv.store.add_pairs([(i, f"seg{2 * i}.mp4", f"seg{2 * i + 1}.mp4", float(-i)) for i in range(3)])
        (tmp_path / "run" / "secret.txt").write_text("not for raters")
        srv.rendered = rendered
        servers.append(start(srv))
        return srv

    yield make
    for srv in servers:
        stop(srv)


@pytest.fixture
def server(make_server):
    return make_server()


def request(srv, method, path, body=None, headers=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def post(srv, path, payload, headers=None):
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    return request(srv, "POST", path, body, {"Content-Type": "application/json", **(headers or {})})


def post_answer(srv, payload, headers=None):
    return post(srv, "/api/answer", payload, headers)


def lease(srv, rater="ana", headers=None):
    return post(srv, "/api/next", {"rater": rater}, headers)


def test_page_has_both_clips_the_four_answers_keyboard_shortcuts_and_escaped_instructions(server):
    status, page = request(server, "GET", "/")
    html = page.decode()
    assert status == 200 and html.count("<video") == 2 and "loop" in html
    for answer in ("left", "right", "equal", "cant_tell"):
        assert f'data-answer="{answer}"' in html
    assert "ArrowLeft" in html and "ArrowDown" in html
    assert "Prefer the &lt;faster&gt; cheetah." in html  # instructions shown, not injected as markup
    assert 'post("/api/next"' in html and 'post("/api/answer"' in html and 'method: "POST"' in html  # the page posts


def test_lease_answer_and_progress(server):
    own_page = {"Origin": server.url}  # what a browser sends from the page itself
    status, data = lease(server, headers=own_page)
    lease_ = json.loads(data)
    assert status == 200 and lease_["pair_id"] == 0 and lease_["clip_1"] == "/clips/seg0.mp4"
    status, data = post_answer(server, {"pair_id": 0, "token": lease_["token"], "answer": "left", "rater": "ana",
                                        "shown": 1.5}, own_page)
    assert status == 200 and json.loads(data)["progress"]["labels"] == 1
    labels = server.store.labels_since(0)
    assert [(l.pair_id, l.mu, l.rater) for l in labels] == [(0, 1.0, "ana")]


def test_clips_are_rendered_once_on_request_and_nothing_else_is_served(server):
    for _ in range(2):
        status, data = request(server, "GET", "/clips/seg0.mp4")
        assert status == 200 and data.endswith(b"seg0.mp4")
    assert server.rendered == ["seg0.mp4"]
    for path in ["/clips/../secret.txt", "/clips/%2e%2e/secret.txt", "/clips/..%2Fsecret.txt", "/clips/../labels.sqlite",
                 "/clips/secret.txt", "/clips/other.mp4", "/secret.txt", "/clips//etc/passwd"]:
        status, data = request(server, "GET", path)
        assert status == 404, path
        assert b"not for raters" not in data


@pytest.mark.parametrize("payload,status", [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    ({"pair_id": 0, "answer": "left", "rater": "ana"}, 400),  # no token
    ({"pair_id": 0, "token": "x", "answer": "sideways", "rater": "ana"}, 400),
    ({"pair_id": 7, "token": "x", "answer": "left", "rater": "ana"}, 404),
    ({"pair_id": 0, "token": "forged", "answer": "left", "rater": "ana"}, 409),
    (b"x" * 5000, 413),
    ({"pair_id": 2**70, "token": "x", "answer": "left", "rater": "ana"}, 400),  # beyond SQLite's integers
    ({"pair_id": -1, "token": "x", "answer": "left", "rater": "ana"}, 400),
    (b"[" * 2000 + b"]" * 2000, 400),  # nested deeper than the JSON parser recurses
    (b'{"pair_id": 0, "token": "x", "answer": "left", "rater": "ana", "shown": NaN}', 400),  # was stored as NULL
    (b'{"pair_id": 0, "token": "x", "answer": "left", "rater": "ana", "shown": Infinity}', 400),
    ({"pair_id": 0, "token": "x", "answer": "left", "rater": "ana", "shown": 10**400}, 400),
    ({"pair_id": 0, "token": "x", "answer": "left", "rater": "ana", "shown": "yesterday"}, 400),
    ({"pair_id": 0, "token": "x", "answer": "left", "rater": "ana", "shown": True}, 400),
    ({"pair_id": 0, "token": "x", "answer": ["left"], "rater": "ana"}, 400),
])
def test_malformed_or_forged_answers_get_a_json_4xx_and_change_nothing(server, payload, status, capfd):
    lease(server)
    got, data = post_answer(server, payload)  # a dropped connection would raise here
    assert got == status and json.loads(data)["error"]
    assert server.store.progress()["answered"] == 0
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("method,path,headers,body,status", [
    ("POST", "/api/answer", {"Content-Type": "text/plain"}, b"{}", 415),  # a form post from another page
    ("POST", "/api/answer", {"Content-Type": "application/json", "Content-Length": "-5"}, None, 400),
    ("POST", "/api/next", {"Content-Type": "application/json", "Content-Length": "x"}, None, 411),
    ("POST", "/api/nothing", {"Content-Type": "application/json"}, b"{}", 404),
    ("PUT", "/api/answer", {"Content-Type": "application/json"}, b"{}", 501),
    ("GET", "/" + "a" * 70000, {}, None, 414),
])
def test_other_bad_requests_get_a_json_error(server, method, path, headers, body, status, capfd):
    got, data = request(server, method, path, body, headers)
    assert got == status and json.loads(data)["error"]
    assert "Traceback" not in capfd.readouterr().err


def test_get_changes_nothing_and_other_web_pages_cannot_lease_or_answer(server):
    status, data = request(server, "GET", "/api/next?rater=ana")  # any page a rater visits could load this URL
    assert status == 405 and "POST" in json.loads(data)["error"]
    foreign = {"Origin": "http://evil.example"}
    assert lease(server, "ana", foreign)[0] == 403
    status, data = post_answer(server, {"pair_id": 0, "token": "x", "answer": "left", "rater": "ana"}, foreign)
    assert status == 403 and "evil.example" in json.loads(data)["error"]
    rebound = {"Host": f"evil.example:{server.server_address[1]}"}  # DNS rebinding: a foreign name for 127.0.0.1
    assert request(server, "GET", "/", headers=rebound)[0] == 403 and lease(server, "ana", rebound)[0] == 403
    assert lease(server, "ana", {"Origin": "null"})[0] == 403
    assert server.store.progress() == {"pairs": 3, "answered": 0, "labels": 0, "waiting": 3}
    leased = {server.store.lease(r).pair_id for r in ("ben", "cleo", "dan")}
    assert leased == {0, 1, 2}  # nothing was leased away by the requests above
    status, _ = request(server, "GET", "/", headers={"Host": f"localhost:{server.server_address[1]}"})
    assert status == 200


def test_no_pair_left_is_204_and_a_missing_rater_is_400(server):
    assert lease(server, "")[0] == 400
    assert post(server, "/api/next", {})[0] == 400
    for rater in ("ana", "ben", "cleo"):
        assert lease(server, rater)[0] == 200
    assert lease(server, "dan")[0] == 204  # all three leased


def test_a_rater_holds_at_most_the_lease_cap(make_server):
    server = make_server(max_leases_per_rater=2)
    first = json.loads(lease(server, "ana")[1])
    assert lease(server, "ana")[0] == 200
    status, data = lease(server, "ana")
    assert status == 429 and "ana" in json.loads(data)["error"] and "at most 2" in json.loads(data)["error"]
    assert lease(server, "ben")[0] == 200  # others still get pairs
    answer = {"pair_id": first["pair_id"], "token": first["token"], "answer": "left", "rater": "ana"}
    assert post_answer(server, answer)[0] == 200
    assert lease(server, "ana")[0] == 204  # answering freed a slot (and no pair is left)


def test_a_replayed_answer_is_rejected(server):
    lease_ = json.loads(lease(server)[1])
    answer = {"pair_id": lease_["pair_id"], "token": lease_["token"], "answer": "right", "rater": "ana"}
    assert post_answer(server, answer)[0] == 200
    status, _ = post_answer(server, {**answer, "answer": "left"})
    assert status == 409 and [l.answer for l in server.store.labels_since(0)] == ["right"]


def test_a_stalled_client_is_dropped_within_the_timeout_while_others_are_served(make_server):
    server = make_server(read_timeout=0.5)
    host, port = server.server_address[:2]
    stalled = socket.create_connection((host, port), timeout=10)
    started = time.monotonic()
    stalled.sendall(f"POST /api/answer HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: 100\r\n\r\n{{\"pair_id\"".encode())  # then nothing more
    lease_ = json.loads(lease(server)[1])  # served meanwhile
    answer = {"pair_id": lease_["pair_id"], "token": lease_["token"], "answer": "left", "rater": "ana"}
    assert post_answer(server, answer)[0] == 200 and time.monotonic() - started < 0.5
    reply = b""
    while chunk := stalled.recv(4096):  # the server hangs up (after a 408) instead of waiting forever
        reply += chunk
    stalled.close()
    assert time.monotonic() - started < 3 and reply.startswith(b"HTTP/1.0 408")
    assert server.store.progress()["answered"] == 1


def test_a_damaged_segment_file_is_a_json_500_and_the_server_goes_on(tmp_path, capfd):
    run_dir = tmp_path / "run"
    (run_dir / "segments").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run": {"env": "HalfCheetah-v5"}}))
    (run_dir / "segments" / "seg-bad-1.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(run_dir / "segments" / "seg-bad-2.npy", np.zeros(3, object), allow_pickle=True)  # not loadable
    server = start(LabelServer(run_dir, port=0, renderer=segment_renderer(run_dir)))
    try:
        for name in ("seg-bad-1.mp4", "seg-bad-2.mp4"):
            status, data = request(server, "GET", f"/clips/{name}")
            assert status == 500 and f"could not render clip {name}" in json.loads(data)["error"]
        assert request(server, "GET", "/clips/seg-none-1.mp4")[0] == 404
        assert request(server, "GET", "/")[0] == 200
    finally:
        stop(server)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "could not render seg-bad-1.mp4" in err
