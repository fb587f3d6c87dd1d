"""The labeling page's server (rlkit2/label_server.py) over HTTP: the page and its controls, leasing and
answering, clips rendered lazily once, nothing outside the clip folder served, and malformed or replayed
requests answered with a 4xx that changes nothing."""

import http.client
import json
import threading

import pytest

from rlkit2.label_server import LabelServer


@pytest.fixture
def server(tmp_path):
    rendered = []

    def renderer(name, path):
        if not name.startswith("seg"):
            raise KeyError(name)
        rendered.append(name)
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42fake-" + name.encode())

    srv = LabelServer(tmp_path / "run", port=0, renderer=renderer, instructions="Prefer the <faster> cheetah.")
    srv.store.add_pairs([(i, f"seg{2 * i}.mp4", f"seg{2 * i + 1}.mp4", float(-i)) for i in range(3)])
    (tmp_path / "run" / "secret.txt").write_text("not for raters")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.rendered = rendered
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method, path, body=None, headers=None):
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def post_answer(srv, payload):
    body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    return request(srv, "POST", "/api/answer", body, {"Content-Type": "application/json"})


def test_page_has_both_clips_the_four_answers_keyboard_shortcuts_and_escaped_instructions(server):
    status, page = request(server, "GET", "/")
    html = page.decode()
    assert status == 200 and html.count("<video") == 2 and "loop" in html
    for answer in ("left", "right", "equal", "cant_tell"):
        assert f'data-answer="{answer}"' in html
    assert "ArrowLeft" in html and "ArrowDown" in html
    assert "Prefer the &lt;faster&gt; cheetah." in html  # instructions shown, not injected as markup


def test_lease_answer_and_progress(server):
    status, data = request(server, "GET", "/api/next?rater=ana")
    lease = json.loads(data)
    assert status == 200 and lease["pair_id"] == 0 and lease["clip_1"] == "/clips/seg0.mp4"
    status, data = post_answer(server, {"pair_id": 0, "token": lease["token"], "answer": "left", "rater": "ana",
                                        "shown": 1.5})
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
])
def test_malformed_or_forged_answers_get_a_4xx_and_change_nothing(server, payload, status):
    request(server, "GET", "/api/next?rater=ana")
    got, data = post_answer(server, payload)
    assert got == status and "error" in json.loads(data)
    assert server.store.progress()["answered"] == 0


def test_a_replayed_answer_is_rejected(server):
    lease = json.loads(request(server, "GET", "/api/next?rater=ana")[1])
    answer = {"pair_id": lease["pair_id"], "token": lease["token"], "answer": "right", "rater": "ana"}
    assert post_answer(server, answer)[0] == 200
    status, _ = post_answer(server, {**answer, "answer": "left"})
    assert status == 409 and [l.answer for l in server.store.labels_since(0)] == ["right"]


def test_no_pair_left_is_204_and_a_missing_rater_is_400(server):
    assert request(server, "GET", "/api/next?rater=")[0] == 400
    for _ in range(3):
        assert request(server, "GET", "/api/next?rater=ana")[0] == 200
    assert request(server, "GET", "/api/next?rater=ben")[0] == 204  # all three leased
