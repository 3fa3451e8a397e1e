"""The node's journal of jobs: one row per received series, in SQLite (standard library) in the
spool. States: receiving -> received -> segmenting -> done -> sent, or refused / failed. Each
transition is committed before the node acts on it, and each is also written to ``events`` with
its reason, so ``lungautoseg node status`` can say why a series is where it is."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

STATES = ("receiving", "received", "segmenting", "done", "sent", "refused", "failed")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    series_uid TEXT PRIMARY KEY, folder TEXT NOT NULL, patient_id TEXT NOT NULL, state TEXT NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0, first_received REAL NOT NULL, last_received REAL NOT NULL,
    result TEXT, reason TEXT, warnings TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL, cleaned INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (time REAL NOT NULL, series_uid TEXT NOT NULL, state TEXT NOT NULL, detail TEXT);
"""


class Journal:
    """Thread-safe: the association threads, the worker and the sender share one connection."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed transition survives a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        with self._transaction() as db:
            for sql, values in statements:
                db.execute(sql, values)

    def received_instance(self, series_uid: str, folder: str, patient_id: str) -> str:
        """Count one stored instance; returns the series' state before it (None: a new series).
        A refused or failed series sent again is received again from the start; one taken as
        complete but not yet started waits for the rest."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE series_uid = ?", (series_uid,)).fetchone()
            if row is None or row["state"] in ("refused", "failed"):
                db.execute("INSERT OR REPLACE INTO jobs (series_uid, folder, patient_id, state, instances, "
                           "first_received, last_received, updated) VALUES (?, ?, ?, 'receiving', 1, ?, ?, ?)",
                           (series_uid, folder, patient_id, now, now, now))
                db.execute("INSERT INTO events VALUES (?, ?, 'receiving', ?)",
                           (now, series_uid, "first instance" if row is None else f"sent again after {row['state']}"))
            elif row["state"] in ("receiving", "received"):
                db.execute("UPDATE jobs SET state = 'receiving', instances = instances + 1, last_received = ?, "
                           "updated = ? WHERE series_uid = ?", (now, now, series_uid))
        return None if row is None else row["state"]

    def move(self, series_uid: str, state: str, detail: str = "", **columns) -> None:
        """Commit a transition (and any of result, reason, warnings, attempts, next_try, cleaned)."""
        if state not in STATES:
            raise ValueError(state)
        now = time.time()
        names = ["state = ?", "updated = ?", *(f"{name} = ?" for name in columns)]
        self._write([(f"UPDATE jobs SET {', '.join(names)} WHERE series_uid = ?",
                      (state, now, *columns.values(), series_uid)),
                     ("INSERT INTO events VALUES (?, ?, ?, ?)", (now, series_uid, state, detail))])

    def claim(self, series_uid: str) -> bool:
        """received -> segmenting, unless an instance arrived meanwhile (then it waits again)."""
        now = time.time()
        with self._transaction() as db:
            claimed = db.execute("UPDATE jobs SET state = 'segmenting', updated = ? WHERE series_uid = ? AND "
                                 "state = 'received'", (now, series_uid)).rowcount == 1
            if claimed:
                db.execute("INSERT INTO events VALUES (?, ?, 'segmenting', '')", (now, series_uid))
        return claimed

    def restart_timers(self) -> None:
        """After a restart, series still arriving get the whole completion wait again: their
        senders may resume only once the node listens again."""
        self._write([("UPDATE jobs SET last_received = ? WHERE state = 'receiving'", (time.time(),))])

    def update(self, series_uid: str, **columns) -> None:
        names = ", ".join(f"{name} = ?" for name in columns)
        self._write([(f"UPDATE jobs SET {names}, updated = ? WHERE series_uid = ?",
                      (*columns.values(), time.time(), series_uid))])

    def jobs(self, *states: str) -> list[sqlite3.Row]:
        with self._lock:
            if not states:
                return self._db.execute("SELECT * FROM jobs ORDER BY first_received").fetchall()
            marks = ", ".join("?" * len(states))
            return self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY first_received",
                                    states).fetchall()

