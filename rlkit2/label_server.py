"""The labeling page: a small local web server over a run's label store (rlkit2/labels.py).

    rlkit2 label RUN_DIR [--host 127.0.0.1] [--port 8765]     (python scripts/label.py in a checkout)

Routes:
    GET  /                      the page: two clips side by side, looping; buttons and keys for left (<-),
                                right (->), equal (up) and can't tell (down); the task's instructions; progress
    POST /api/next              JSON {rater}: lease the next pair: {pair_id, token, clip_1, clip_2, progress};
                                204 when none; 429 when the rater already holds too many unanswered pairs
    POST /api/answer            JSON {pair_id, token, answer, rater, shown}: 200 {progress}, or 4xx {error}
    GET  /clips/NAME.mp4        a clip from RUN_DIR/clips only (rendered on first request when a renderer is
                                given); anything else is 404

Only POST changes anything, and only from the page itself: every request must name this server in its Host header
(127.0.0.1, localhost or the bound address, plus ``allowed_hosts``; this stops DNS rebinding), a POST's Origin,
when sent, must be that same host, and its body must be JSON (application/json, at most 4 KiB), so another web
page a rater visits cannot lease or answer pairs. Only files directly inside RUN_DIR/clips with plain names are
ever served. Every error, a bad request or a failure of the server's own (e.g. a damaged segment file), is a JSON
{error} response with a 4xx/5xx status and changes nothing; a client that stalls mid-request for ``read_timeout``
seconds is dropped. Standard library only (http.server), so labeling needs nothing beyond rlkit2's own
dependencies.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import urlparse

from rlkit2.labels import LabelError, LabelStore

CLIP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}\.mp4$")
MAX_BODY = 4096
DEFAULT_INSTRUCTIONS = ("Watch both clips. Choose the one where the agent does better at the task; "
                        "'equal' if they are about as good, 'can't tell' if you cannot judge.")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rlkit2 labeling</title>
<style>
 body { font-family: sans-serif; margin: 1.5em; background: #fafafa; }
 #clips { display: flex; gap: 1em; } #clips figure { margin: 0; flex: 1; text-align: center; }
 video { width: 100%; max-width: 480px; background: #000; }
 button { font-size: 1.1em; margin: 0.3em; padding: 0.4em 1em; }
 #status { color: #555; margin: 0.5em 0; } #error { color: #b00; }
</style></head>
<body>
<h1>Which clip is better?</h1>
<p id="instructions">__INSTRUCTIONS__</p>
<p>Your name: <input id="rater" value="rater" size="12"></p>
<div id="clips">
 <figure><video id="left" autoplay loop muted playsinline></video><figcaption>left (&larr;)</figcaption></figure>
 <figure><video id="right" autoplay loop muted playsinline></video><figcaption>right (&rarr;)</figcaption></figure>
</div>
<div>
 <button data-answer="left">Left is better (&larr;)</button>
 <button data-answer="right">Right is better (&rarr;)</button>
 <button data-answer="equal">Equal (&uarr;)</button>
 <button data-answer="cant_tell">Can't tell (&darr;)</button>
</div>
<p id="status">loading...</p><p id="error"></p>
<script>
let current = null, shownAt = null;
const keys = {ArrowLeft: "left", ArrowRight: "right", ArrowUp: "equal", ArrowDown: "cant_tell"};
function progressText(p) { return p.labels + " labels, " + p.waiting + " pairs waiting"; }
function post(path, body) {
  return fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
}
async function next() {
  const rater = document.getElementById("rater").value;
  const r = await post("/api/next", {rater: rater});
  if (r.status === 204) { current = null; document.getElementById("status").textContent = "No pairs to label yet; checking again soon."; setTimeout(next, 3000); return; }
  const data = await r.json();
  if (r.status === 429) { document.getElementById("error").textContent = data.error; setTimeout(next, 10000); return; }
  if (!r.ok) { document.getElementById("error").textContent = data.error; return; }
  current = data; shownAt = Date.now() / 1000;
  document.getElementById("left").src = data.clip_1;
  document.getElementById("right").src = data.clip_2;
  document.getElementById("status").textContent = "pair " + data.pair_id + " - " + progressText(data.progress);
  document.getElementById("error").textContent = "";
}
async function answer(a) {
  if (current === null) return;
  const body = {pair_id: current.pair_id, token: current.token, answer: a,
                rater: document.getElementById("rater").value, shown: shownAt};
  current = null;
  const r = await post("/api/answer", body);
  const data = await r.json();
  if (!r.ok) document.getElementById("error").textContent = data.error;
  next();
}
document.querySelectorAll("button[data-answer]").forEach(b => b.addEventListener("click", () => answer(b.dataset.answer)));
document.addEventListener("keydown", e => { if (keys[e.key] && e.target.tagName !== "INPUT") { e.preventDefault(); answer(keys[e.key]); } });
next();
</script>
</body></html>
"""


class LabelServer(ThreadingHTTPServer):
    """``read_timeout``: seconds a client may stall on any socket operation (reading a request, its body) before it
    is dropped. ``max_leases_per_rater``: unanswered pairs one rater may hold. ``allowed_hosts``: more names (or
    name:port) raters reach the server by, e.g. the machine's name when binding to 0.0.0.0."""

    daemon_threads = True

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765,
                 renderer: Callable[[str, Path], None] | None = None, instructions: str | None = None,
                 read_timeout: float = 5.0, max_leases_per_rater: int = 5, allowed_hosts: Iterable[str] = ()):
        if not read_timeout > 0:
            raise ValueError(f"read_timeout must be > 0 seconds, got {read_timeout}")
        self.run_dir = Path(run_dir)
        self.clips = (self.run_dir / "clips").resolve()
        self.clips.mkdir(parents=True, exist_ok=True)
        self.store = LabelStore(self.run_dir / "labels.sqlite", max_leases_per_rater=max_leases_per_rater)
        self.renderer = renderer  # renderer(name, path): writes the clip `name` to `path` (lazily, on request)
        self.render_lock = threading.Lock()
        self.read_timeout = read_timeout
        text = instructions
        if text is None:
            file = self.run_dir / "instructions.txt"
            text = file.read_text().strip() if file.exists() else DEFAULT_INSTRUCTIONS
        self.page = PAGE.replace("__INSTRUCTIONS__", _escape(text)).encode()
        super().__init__((host, port), Handler)
        bound = self.server_address[1]
        names = {"127.0.0.1", "localhost", "[::1]"}
        if host not in ("", "0.0.0.0", "::"):
            names.add(f"[{host}]" if ":" in host else host)
        self.allowed_hosts = {f"{n}:{bound}".lower() for n in names}
        self.allowed_hosts |= {(h if re.search(r":\d+$", h) else f"{h}:{bound}").lower() for h in allowed_hosts}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"

    def log(self, message: str) -> None:
        """One line on the server's terminal (never a traceback)."""
        print(f"label server: {message}", file=sys.stderr, flush=True)

    def handle_error(self, request, client_address) -> None:
        """An error that escaped a handler: one line instead of socketserver's traceback; none for a client that
        went away or stalled."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.log(f"error serving {client_address[0]}: {type(error).__name__}: {error}")


class Handler(BaseHTTPRequestHandler):
    server: LabelServer

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # applied to the socket by StreamRequestHandler.setup
        self.responded = False
        super().setup()

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows progress instead
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self.responded = True
        super().send_response(code, message)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What the base class answers itself (a malformed request line, an unsupported method) in JSON too."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._json(code, {"error": message or phrase})

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if status == 405:  # only the API answers 405
            self.send_header("Allow", "POST")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve(self._get)

    def do_POST(self) -> None:
        self._serve(self._post)

    def _serve(self, route: Callable[[str], None]) -> None:
        """Run a route; whatever goes wrong becomes a JSON error response, never a dropped connection."""
        path = urlparse(self.path).path
        try:
            host = (self.headers.get("Host") or "").lower()
            if host not in self.server.allowed_hosts:
                raise LabelError(403, f"Host {host!r} is not this labeling server; open {self.server.url}")
            route(path)
        except LabelError as e:
            self._json(e.status, {"error": str(e)})
        except TimeoutError:  # the client stalled mid-body: tell it, if it still listens, and hang up
            self.close_connection = True
            self._json(408, {"error": f"request not received within {self.server.read_timeout:g} s"})
        except ConnectionError:
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug or a damaged file: a 500 with a message, the server lives on
            self.server.log(f"{self.command} {path}: {type(e).__name__}: {e}")
            self.close_connection = True
            if not self.responded:
                self._json(500, {"error": f"the labeling server failed ({type(e).__name__}: {e}); see its terminal"})

    def _get(self, path: str) -> None:
        if path == "/":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.server.page)))
            self.end_headers()
            self.wfile.write(self.server.page)
        elif path in ("/api/next", "/api/answer"):
            # GET changes nothing: otherwise a link or an image on any page a rater visits could lease pairs away
            raise LabelError(405, f"use POST {path} with a JSON body")
        elif path.startswith("/clips/"):
            self._clip(path[len("/clips/"):])
        else:
            raise LabelError(404, f"no such page: {path}")

    def _clip(self, name: str) -> None:
        path = self.server.clips / name
        # plain names only, and the resolved file must sit directly in the clip folder
        if not CLIP_NAME.match(name) or path.resolve().parent != self.server.clips:
            raise LabelError(404, "no such clip")
        if not path.exists() and self.server.renderer is not None:
            with self.server.render_lock:
                if not path.exists():
                    try:
                        self.server.renderer(name, path)
                    except KeyError:
                        raise LabelError(404, "no such clip") from None
                    except Exception as e:  # noqa: BLE001 - e.g. a damaged segment file
                        self.server.log(f"could not render {name}: {type(e).__name__}: {e}")
                        raise LabelError(500, f"could not render clip {name} from its stored segment "
                                              f"({type(e).__name__}: {e})") from None
        if not path.is_file():
            raise LabelError(404, "no such clip")
        data = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _post(self, path: str) -> None:
        if path not in ("/api/next", "/api/answer"):
            raise LabelError(404, f"no such endpoint: {path}")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{self.headers['Host'].lower()}":
            raise LabelError(403, f"requests from {origin!r} are refused: only the labeling page itself may post")
        body = self._read_json()
        store = self.server.store
        if path == "/api/next":
            lease = store.lease(body.get("rater", ""))
            if lease is None:
                self.send_response(HTTPStatus.NO_CONTENT)
                self.end_headers()
                return
            return self._json(200, {"pair_id": lease.pair_id, "token": lease.token, "clip_1": f"/clips/{lease.clip_1}",
                                    "clip_2": f"/clips/{lease.clip_2}", "progress": store.progress()})
        try:
            pair_id, token, answer, rater = body["pair_id"], body["token"], body["answer"], body["rater"]
        except KeyError as e:
            raise LabelError(400, f"malformed answer (no {e}); expected JSON {{pair_id, token, answer, rater, "
                                  "shown}") from None
        if not all(isinstance(x, str) for x in (token, answer, rater)):
            raise LabelError(400, "malformed answer: token, answer and rater must be strings")
        store.submit(pair_id, token, answer, rater, body.get("shown"))
        self._json(200, {"ok": True, "progress": store.progress()})

    def _read_json(self) -> dict:
        """The request's JSON object body: LabelError 411/413/415/400 unless it has a Content-Length of at most
        MAX_BODY bytes, is application/json and parses to an object (NaN and Infinity are not JSON)."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise LabelError(415, f"the body must be application/json, got {content_type or 'no Content-Type'!r}")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise LabelError(411, "a Content-Length header is required") from None
        if length < 0:
            raise LabelError(400, f"Content-Length must be >= 0, got {length}")
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise LabelError(413, f"request body over {MAX_BODY} bytes")
        data = self.rfile.read(length)  # raises TimeoutError if the client stalls
        if len(data) < length:
            self.close_connection = True
            raise LabelError(400, f"the body ended after {len(data)} of {length} bytes")
        try:
            body = json.loads(data, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise LabelError(400, f"malformed JSON body ({type(e).__name__}: {str(e)[:100]})") from None
        if not isinstance(body, dict):
            raise LabelError(400, f"the body must be a JSON object, got {type(body).__name__}")
        return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def segment_renderer(run_dir: str | Path) -> Callable[[str, Path], None] | None:
    """For a run whose pairs are stored on disk by ``--agent pref --oracle human`` (RUN_DIR/segments/NAME.npy:
    MuJoCo simulator states, float [steps, nq + nv], or Atari frames, uint8 [steps, H, W]): render NAME.mp4 from
    NAME.npy on request. All rendering happens on one worker thread, which owns the GL context; None if the run
    has no config."""
    import numpy as np

    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return None
    run = json.loads(config_file.read_text())["run"]
    executor = ThreadPoolExecutor(max_workers=1)
    holder: dict = {}

    def render(name: str, path: Path) -> None:
        stored = run_dir / "segments" / f"{name[:-len('.mp4')]}.npy"
        if not stored.exists():
            raise KeyError(name)
        data = np.load(stored)
        kind = "frames" if data.dtype == np.uint8 else "states"
        if kind not in holder:
            from rlkit2.clips import FrameClipRenderer, MujocoClipRenderer

            if kind == "frames":  # Atari: 60 emulator frames per second, one stored frame per agent step
                holder[kind] = FrameClipRenderer(fps=60 / (run.get("atari") or {}).get("frame_skip", 4))
            else:
                holder[kind] = MujocoClipRenderer(run["env"], env_kwargs=run.get("env_kwargs") or {})
        holder[kind].render(data, path)

    return lambda name, path: executor.submit(render, name, path).result()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
