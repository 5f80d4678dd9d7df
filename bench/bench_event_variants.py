"""Where event creation's time goes on SQLite: variants of migration 6's event schema, each on a copy of
one store, answering the same results in batches of 8 (alternating chunks, best chunk of each).

    python3 bench/bench_event_variants.py [--services 750] [--checks 20] [--rounds 5] [--flips 20,1]
        [--variants ref,cur,noidx,...] [--extra NAME=SQL | NAME=@file.sql] [--prefill N] [--pragma P=V]

Per answer: this process's CPU and wall time with autocheckpoint off, then the checkpoint's own cost,
and the WAL frames (pages written) per transaction of 8. `ref` has no event triggers; `cur` is the
schema as migrated; the others drop a part (indexes, the outbox insert, the join) to price it.
--flips: 20 = 1 answer in 20 fails (a `failing` event each), 1 = every answer fails.
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.bench_api import build_catalog, fill_results  # noqa: E402
from reconciler.clock import Clock  # noqa: E402
from reconciler.gitsource import DirectorySource  # noqa: E402
from reconciler.reconcile import sync  # noqa: E402
from reconciler.store import open_database  # noqa: E402
from reconciler.store.migrations import MIGRATIONS  # noqa: E402

DROP_EV = "DROP TRIGGER events_on_first_result; DROP TRIGGER events_on_changed_result;\n"
# migration 6's two triggers on latest_results, as they are
_V6 = dict(MIGRATIONS)[6]
TRIGGERS = _V6[_V6.index("CREATE TRIGGER events_on_first_result"):_V6.index("-- One delivery per (route, event)")]
OUTBOX = "INSERT INTO event_outbox (event_id) VALUES (last_insert_rowid());"
SIMPLE = """
CREATE TRIGGER events_on_first_result AFTER INSERT ON latest_results
WHEN NEW.status IN ('timed-out', 'error') OR NEW.result IN ('fail', 'error')
BEGIN
  INSERT INTO events (type, created_at, team, service, check_slug, result_id, outcome, summary)
  VALUES ('failing', NEW.finished_at, NULL, NULL, NULL, NEW.result_id, NEW.result, 'x');
  OUTBOX
END;
"""
NO_INDEXES = "DROP INDEX events_by_service; DROP INDEX events_by_check;"
VARIANTS = {
    "ref": DROP_EV,  # no events at all
    "cur": "",
    "noidx": NO_INDEXES,
    "nosvcidx": "DROP INDEX events_by_service;",
    "nochkidx": "DROP INDEX events_by_check;",
    "nooutbox": DROP_EV + TRIGGERS.replace(OUTBOX, ""),
    "nojoin": DROP_EV + SIMPLE.replace("OUTBOX", OUTBOX),  # no join, no summary text
    "bare": DROP_EV + SIMPLE.replace("OUTBOX", "") + NO_INDEXES,  # the event row alone
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--services", type=int, default=750)
    p.add_argument("--checks", type=int, default=20)
    p.add_argument("--chunk", type=int, default=800)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--prefill", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--flips", default="20,1")
    p.add_argument("--nofk", action="store_true")
    p.add_argument("--pragma", action="append", default=[])
    p.add_argument("--deliveries", type=int, default=0)
    p.add_argument("--extra", action="append", default=[], help="name=SQL (applied on a copy)")
    a = p.parse_args()
    variants = {n: VARIANTS[n] for n in a.variants.split(",") if n}
    for e in a.extra:
        n, sql = e.split("=", 1); variants[n] = Path(sql[1:]).read_text() if sql.startswith("@") else sql
    flips = [int(f) for f in a.flips.split(",")]
    work = Path(tempfile.mkdtemp(prefix="exp-events-"))
    build_catalog(work / "catalog", a.services, a.checks)
    base = work / "base.db"
    store = open_database(f"sqlite://{base}")
    sync(store, DirectorySource(work / "catalog"))
    need = a.chunk * a.rounds * len(flips)
    ids = list(fill_results(store, pending=min(need + 50, a.services * a.checks - 50)))
    assert len(ids) >= need, (len(ids), need)
    store.close()
    if a.prefill:
        c = sqlite3.connect(base)
        c.execute(f"""INSERT INTO events (type, created_at, team, service, check_slug, result_id, outcome, summary)
          WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {a.prefill})
          SELECT 'failing', '2026-01-01T00:00:00Z', 'team-' || (i % 40), printf('service-%05d', 1 + (i * 7919) % {a.services}),
                 printf('check-%02d', 1 + i % {a.checks}), i, 'fail', 'service: check is failing (fail)' FROM n""")
        c.execute("DELETE FROM event_outbox")
        c.execute(f"INSERT INTO event_deliveries (route, event_id, team, not_before, status) SELECT 'r', id, NULL, 'x', 'delivered' FROM events LIMIT {a.deliveries}"); c.commit(); c.execute("VACUUM"); c.close()
    conns = {}
    for name, sql in variants.items():
        path = work / f"{name}.db"
        shutil.copyfile(base, path)
        c = sqlite3.connect(path, isolation_level=None); c.executescript(sql); c.close()
        db = open_database(f"sqlite://{path}", migrate=False)
        conn = db.backend._connection()
        if a.nofk:
            conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        for pr in a.pragma:
            conn.execute("PRAGMA " + pr)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conns[name] = (db, conn)
    now = Clock().now()
    pos = 0
    print(f"prefill {a.prefill} events; chunk {a.chunk} answers in batches of 8; best of {a.rounds}", flush=True)
    for flip in flips:
        best = {}
        for _ in range(a.rounds):
            part = ids[pos:pos + a.chunk]; pos += a.chunk
            for name, (db, conn) in conns.items():
                cpu, wall = time.process_time(), time.perf_counter()
                for s in range(0, len(part), 8):
                    db.results.answer([(rid, "fail" if flip and rid % flip == 0 else "pass", "bench", None, now)
                                       for rid in part[s:s + 8]])
                cpu1, wall1 = time.process_time(), time.perf_counter()
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cpu2, wall2 = time.process_time(), time.perf_counter()
                n = len(part)
                fig = {"cpu": (cpu1 - cpu) / n * 1e6, "wall": (wall1 - wall) / n * 1e6,
                       "ckcpu": (cpu2 - cpu1) / n * 1e6, "ckwall": (wall2 - wall1) / n * 1e6, "frames": frames / n * 8}
                for k, v in fig.items():
                    best[name, k] = min(best.get((name, k), v), v)
        print(f"flip {flip}:")
        r = best["ref", "cpu"] if "ref" in variants else None
        for name in variants:
            ev = conns[name][1].execute("SELECT count(*) FROM events").fetchone()[0]
            rel = f"{(best[name, 'cpu'] / r - 1) * 100:+6.1f}%" if r else ""
            print(f"  {name:10s} cpu {best[name, 'cpu']:6.1f} {rel}  wall {best[name, 'wall']:6.1f}"
                  f"  ckpt cpu {best[name, 'ckcpu']:5.1f} wall {best[name, 'ckwall']:6.1f}  frames/txn {best[name, 'frames']:5.1f}  events {ev}", flush=True)
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
