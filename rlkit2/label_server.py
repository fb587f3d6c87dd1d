"""The labeling page: a small local web server over a run's label store (rlkit2/labels.py).

    python scripts/label.py RUN_DIR [--host 127.0.0.1] [--port 8765]

Routes:
    GET  /                      the page: two clips side by side, looping; buttons and keys for left (<-),
                                right (->), equal (up) and can't tell (down); the task's instructions; progress
    GET  /api/next?rater=NAME   lease the next pair: {pair_id, token, clip_1, clip_2, progress}; 204 when none
    POST /api/answer            JSON {pair_id, token, answer, rater, shown}: 200 {progress}, or 4xx {error}
    GET  /clips/NAME.mp4        a clip from RUN_DIR/clips only (rendered on first request when a renderer is
                                given); anything else is 404

Only files directly inside RUN_DIR/clips with plain names are ever served; request bodies are capped at 4 KiB;
every bad request gets a 4xx JSON error and changes nothing. Standard library only (http.server), so labeling
needs nothing beyond rlkit2's own dependencies.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

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
async function next() {
  const rater = document.getElementById("rater").value;
  const r = await fetch("/api/next?rater=" + encodeURIComponent(rater));
  if (r.status === 204) { current = null; document.getElementById("status").textContent = "No pairs to label yet; checking again soon."; setTimeout(next, 3000); return; }
  const data = await r.json();
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
  const r = await fetch("/api/answer", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
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
    daemon_threads = True

    def __init__(self, run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765,
                 renderer: Callable[[str, Path], None] | None = None, instructions: str | None = None):
        self.run_dir = Path(run_dir)
        self.clips = (self.run_dir / "clips").resolve()
        self.clips.mkdir(parents=True, exist_ok=True)
        self.store = LabelStore(self.run_dir / "labels.sqlite")
        self.renderer = renderer  # renderer(name, path): writes the clip `name` to `path` (lazily, on request)
        self.render_lock = threading.Lock()
        text = instructions
        if text is None:
            file = self.run_dir / "instructions.txt"
            text = file.read_text().strip() if file.exists() else DEFAULT_INSTRUCTIONS
        self.page = PAGE.replace("__INSTRUCTIONS__", _escape(text)).encode()
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: LabelServer

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows progress instead
        pass

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/":
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.server.page)))
            self.end_headers()
            self.wfile.write(self.server.page)
        elif url.path == "/api/next":
            rater = parse_qs(url.query).get("rater", [""])[0]
            try:
                lease = self.server.store.lease(rater)
            except LabelError as e:
                return self._json(e.status, {"error": str(e)})
            if lease is None:
                self.send_response(HTTPStatus.NO_CONTENT)
                self.end_headers()
                return
            self._json(200, {"pair_id": lease.pair_id, "token": lease.token, "clip_1": f"/clips/{lease.clip_1}",
                             "clip_2": f"/clips/{lease.clip_2}", "progress": self.server.store.progress()})
        elif url.path.startswith("/clips/"):
            self._clip(url.path[len("/clips/"):])
        else:
            self._json(404, {"error": f"no such page: {url.path}"})

    def _clip(self, name: str) -> None:
        path = self.server.clips / name
        # plain names only, and the resolved file must sit directly in the clip folder
        if not CLIP_NAME.match(name) or path.resolve().parent != self.server.clips:
            return self._json(404, {"error": "no such clip"})
        if not path.exists() and self.server.renderer is not None:
            with self.server.render_lock:
                if not path.exists():
                    try:
                        self.server.renderer(name, path)
                    except KeyError:
                        return self._json(404, {"error": "no such clip"})
        if not path.is_file():
            return self._json(404, {"error": "no such clip"})
        data = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/api/answer":
            return self._json(404, {"error": "no such endpoint"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._json(411, {"error": "a Content-Length header is required"})
        if length < 0 or length > MAX_BODY:
            return self._json(413, {"error": f"request body over {MAX_BODY} bytes"})
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("not an object")
            pair_id, token, answer, rater = body["pair_id"], body["token"], body["answer"], body["rater"]
            shown = body.get("shown")
            if not all(isinstance(x, str) for x in (token, answer, rater)) or \
                    not (shown is None or isinstance(shown, (int, float))):
                raise ValueError("token, answer and rater must be strings, shown a number")
        except (ValueError, KeyError) as e:
            return self._json(400, {"error": f"malformed answer ({e}); expected JSON {{pair_id, token, answer, "
                                             "rater, shown}"})
        try:
            self.server.store.submit(pair_id, token, answer, rater, shown)
        except LabelError as e:
            return self._json(e.status, {"error": str(e)})
        self._json(200, {"ok": True, "progress": self.server.store.progress()})


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
