"""The label store for preference queries answered by people: one SQLite file in the run directory.

Training writes pairs to label (two clip references and a priority, e.g. the ensemble's disagreement); raters
lease a pair, watch the two clips and answer; training reads new answers whenever it likes (agents/pref.py waits
only for the initial pairs, before RL starts). Everything goes through short transactions on a WAL-mode database, so several raters (threads or
processes) and the trainer can use the same file at once without losing an answer.

Tables:
    pairs(id, clip_1, clip_2, priority, created, lease_token, lease_rater, lease_until, times_shown)
    labels(pair_id, answer, rater, shown, answered)      -- at most one answer per pair

Answers: ``left`` (mu = 1), ``right`` (mu = 0), ``equal`` (mu = 0.5), ``cant_tell`` (kept, but not a label).
A lease lasts ``lease_seconds`` (default 120 s, rl-teacher's 2 minutes); an expired lease is offered again. A rater
holds at most ``max_leases_per_rater`` unanswered leases at once (default 5), so one rater (or a page reloaded over
and over) cannot take every pair. Bad submissions raise ``LabelError`` with the HTTP status a web front end should
answer with and change nothing.
"""

from __future__ import annotations

import math
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ANSWERS = {"left": 1.0, "right": 0.0, "equal": 0.5, "cant_tell": None}

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    clip_1 TEXT NOT NULL,
    clip_2 TEXT NOT NULL,
    priority REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    lease_token TEXT,
    lease_rater TEXT,
    lease_until REAL,
    times_shown INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id INTEGER NOT NULL UNIQUE REFERENCES pairs(id),
    answer TEXT NOT NULL CHECK (answer IN ('left', 'right', 'equal', 'cant_tell')),
    rater TEXT NOT NULL,
    shown REAL,
    answered REAL NOT NULL
);
"""


class LabelError(ValueError):
    """A submission that cannot be accepted; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Lease:
    pair_id: int
    clip_1: str
    clip_2: str
    token: str
    until: float


@dataclass(frozen=True)
class Label:
    seq: int  # increasing: read labels with seq > the last one seen
    pair_id: int
    answer: str
    mu: float | None  # None for cant_tell
    rater: str


class LabelStore:
    def __init__(self, path: str | Path, lease_seconds: float = 120.0, clock=time.time, max_leases_per_rater: int = 5):
        if max_leases_per_rater < 1:
            raise ValueError(f"max_leases_per_rater must be >= 1, got {max_leases_per_rater}")
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self.max_leases_per_rater = max_leases_per_rater
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer (and the reverse)
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextmanager
    def _db(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection per call (safe across threads); ``immediate`` takes the write lock at BEGIN, so a
        read-then-write (lease, submit) cannot interleave with another writer."""
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    # --- the trainer's side -----------------------------------------------------------------------------------
    def add_pairs(self, pairs: list[tuple[int, str, str, float]]) -> None:
        """(pair id, clip 1, clip 2, priority) rows with ids chosen by the caller; ids must be new. A trainer uses
        ``add_new_pairs``, which lets the store choose."""
        now = self.clock()
        with self._db(immediate=True) as db:
            db.executemany("INSERT INTO pairs (id, clip_1, clip_2, priority, created) VALUES (?, ?, ?, ?, ?)",
                           [(int(i), str(c1), str(c2), float(p), now) for i, c1, c2, p in pairs])

    def add_new_pairs(self, pairs: list[tuple[str, str, float]]) -> list[int]:
        """Add (clip 1, clip 2, priority) rows and return their ids: the next ids after every id in the store,
        allocated in the insert's own transaction. The store, not a trainer's counter, is the truth: a run resumed
        from a checkpoint older than its last stored pairs must not reuse their ids."""
        now = self.clock()
        with self._db(immediate=True) as db:
            first = db.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM pairs").fetchone()[0]
            ids = list(range(first, first + len(pairs)))
            db.executemany("INSERT INTO pairs (id, clip_1, clip_2, priority, created) VALUES (?, ?, ?, ?, ?)",
                           [(i, str(c1), str(c2), float(p), now) for i, (c1, c2, p) in zip(ids, pairs)])
        return ids

    def labels_since(self, seq: int = 0) -> list[Label]:
        with self._db() as db:
            rows = db.execute("SELECT seq, pair_id, answer, rater FROM labels WHERE seq > ? ORDER BY seq", (seq,))
            return [Label(s, p, a, ANSWERS[a], r) for s, p, a, r in rows.fetchall()]

    def progress(self) -> dict[str, int]:
        with self._db() as db:
            pairs = db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            answered = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
            usable = db.execute("SELECT COUNT(*) FROM labels WHERE answer != 'cant_tell'").fetchone()[0]
        return {"pairs": pairs, "answered": answered, "labels": usable, "waiting": pairs - answered}

    # --- the rater's side -------------------------------------------------------------------------------------
    def lease(self, rater: str) -> Lease | None:
        """The highest-priority unanswered pair nobody holds a live lease on, leased to ``rater``; None if none.
        Raises LabelError 429 when ``rater`` already holds ``max_leases_per_rater`` live leases."""
        if not isinstance(rater, str) or not rater or len(rater) > 100:
            raise LabelError(400, "rater must be a non-empty name of at most 100 characters")
        now = self.clock()
        with self._db(immediate=True) as db:
            held = db.execute("SELECT COUNT(*) FROM pairs WHERE lease_rater = ? AND lease_until >= ?",
                              (rater, now)).fetchone()[0]  # answering a pair clears its lease
            if held >= self.max_leases_per_rater:
                raise LabelError(429, f"rater {rater!r} already holds {held} unanswered pairs (at most "
                                      f"{self.max_leases_per_rater}); answer them, or wait up to "
                                      f"{self.lease_seconds:.0f} s for their leases to expire")
            row = db.execute(
                "SELECT id, clip_1, clip_2 FROM pairs WHERE id NOT IN (SELECT pair_id FROM labels) "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY priority DESC, id LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            token, until = secrets.token_hex(16), now + self.lease_seconds
            db.execute("UPDATE pairs SET lease_token = ?, lease_rater = ?, lease_until = ?, "
                       "times_shown = times_shown + 1 WHERE id = ?", (token, rater, until, row[0]))
        return Lease(row[0], row[1], row[2], token, until)

    def submit(self, pair_id: int, token: str, answer: str, rater: str, shown: float | None = None) -> Label:
        """Record ``rater``'s answer to a pair they hold the lease on (``shown``: when the pair was shown, seconds
        since the epoch, or None). Raises LabelError (changing nothing) for an unknown answer, a pair id that is
        not an integer in SQLite's range or a ``shown`` that is not a finite number (400), an unknown pair (404), a
        pair already answered (409: a replay) or a lease that is not this rater's or has expired (409)."""
        if not isinstance(answer, str) or answer not in ANSWERS:
            raise LabelError(400, f"answer must be one of {', '.join(ANSWERS)}, got {answer!r}")
        if not isinstance(pair_id, int) or isinstance(pair_id, bool) or not 0 <= pair_id < 2**63:
            raise LabelError(400, f"pair_id must be an integer from 0 to 2**63 - 1, got {pair_id!r}")
        shown = _time_or_none(shown)
        now = self.clock()
        with self._db(immediate=True) as db:
            row = db.execute("SELECT lease_token, lease_rater, lease_until FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if row is None:
                raise LabelError(404, f"no pair {pair_id}")
            if db.execute("SELECT 1 FROM labels WHERE pair_id = ?", (pair_id,)).fetchone():
                raise LabelError(409, f"pair {pair_id} is already answered")
            lease_token, lease_rater, lease_until = row
            if not token or lease_token is None or not secrets.compare_digest(str(token), lease_token) \
                    or lease_rater != rater:
                raise LabelError(409, f"pair {pair_id} is not leased to {rater!r} with this token")
            if lease_until < now:
                raise LabelError(409, f"the lease on pair {pair_id} expired; ask for a new pair")
            cursor = db.execute("INSERT INTO labels (pair_id, answer, rater, shown, answered) VALUES (?, ?, ?, ?, ?)",
                                (pair_id, answer, rater, shown, now))
            db.execute("UPDATE pairs SET lease_token = NULL, lease_until = NULL WHERE id = ?", (pair_id,))
            seq = cursor.lastrowid
        return Label(seq, pair_id, answer, ANSWERS[answer], rater)


def _time_or_none(shown) -> float | None:
    """``shown`` as a float, or LabelError 400 unless it is None or a finite number >= 0 (NaN would be stored as
    NULL, and an integer beyond float range would fail inside SQLite)."""
    if shown is None:
        return None
    value = math.nan
    if isinstance(shown, (int, float)) and not isinstance(shown, bool):
        try:
            value = float(shown)
        except OverflowError:
            pass
    if not math.isfinite(value) or value < 0:
        raise LabelError(400, f"shown must be a finite time in seconds (>= 0) or null, got {shown!r}")
    return value
