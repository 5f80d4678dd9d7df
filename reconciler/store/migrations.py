"""The store's schema: versioned migrations, applied in order and recorded in schema_migrations."""

from __future__ import annotations

import sqlite3

# Version 1 is the first schema as it landed on main. Stores exist in the wild now: never edit a
# landed version, append a new one.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS catalog_state (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE IF NOT EXISTS services (
            id           INTEGER PRIMARY KEY,
            slug         TEXT NOT NULL UNIQUE,
            name         TEXT NOT NULL,
            priority     INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 10),
            type         TEXT,
            description  TEXT,
            owner        TEXT,
            repository   TEXT,
            active       INTEGER NOT NULL DEFAULT 1,
            tags         TEXT NOT NULL DEFAULT '[]',   -- JSON list
            dependencies TEXT NOT NULL DEFAULT '[]',   -- JSON list of slugs
            meta         TEXT NOT NULL DEFAULT '{}',   -- JSON object, string -> string
            path         TEXT NOT NULL,                -- file it was last read from
            digest       TEXT NOT NULL,                -- hash of its definition, to see updates
            error        TEXT,                         -- its file's current error, if any
            removed_at   TEXT,                         -- soft delete: results stay forever
            created_at   TEXT NOT NULL,
            updated_at   TEXT NOT NULL
        );

        CREATE TABLE IF NOT EXISTS checks (
            id                  INTEGER PRIMARY KEY,
            slug                TEXT NOT NULL UNIQUE,
            name                TEXT NOT NULL,
            description         TEXT,
            frequency           TEXT CHECK (frequency IN ('hourly', 'daily', 'weekly', 'ad-hoc')),
            schedule            TEXT,                   -- cron, instead of frequency
            timeout_seconds     INTEGER NOT NULL CHECK (timeout_seconds > 0),
            active              INTEGER NOT NULL DEFAULT 1,
            repository          TEXT,
            targets             TEXT NOT NULL,          -- JSON as written: "all", "none", [..], {..}
            target_kind         TEXT NOT NULL CHECK (target_kind IN ('all', 'none', 'list', 'selector')),
            target_type         TEXT,
            target_owner        TEXT,
            target_tags         TEXT,                   -- JSON list; a service needs all of them
            target_max_priority INTEGER,
            path                TEXT NOT NULL,
            digest              TEXT NOT NULL,
            error               TEXT,
            removed_at          TEXT,
            created_at          TEXT NOT NULL,
            updated_at          TEXT NOT NULL,
            CHECK ((frequency IS NULL) <> (schedule IS NULL))
        );

        -- Check targeting by a list of slugs (target_kind = 'list').
        CREATE TABLE IF NOT EXISTS check_targets (
            check_id     INTEGER NOT NULL REFERENCES checks(id),
            service_slug TEXT NOT NULL,
            PRIMARY KEY (check_id, service_slug)
        ) WITHOUT ROWID;

        -- The last good state of each catalog file, and its current error.
        CREATE TABLE IF NOT EXISTS catalog_files (
            path     TEXT PRIMARY KEY,
            kind     TEXT NOT NULL CHECK (kind IN ('service', 'check', 'catalog')),
            slug     TEXT,                               -- the entity it defines, when valid
            digest   TEXT NOT NULL,                      -- hash of the bytes last read
            error    TEXT                                -- JSON {file,line,col,message} or NULL
        );

        CREATE TABLE IF NOT EXISTS results (
            id          INTEGER PRIMARY KEY,
            check_id    INTEGER NOT NULL REFERENCES checks(id),
            service_id  INTEGER REFERENCES services(id),  -- NULL for checks with services: none
            status      TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'completed', 'timed-out', 'error')),
            result      TEXT NOT NULL DEFAULT 'unknown'
                        CHECK (result IN ('unknown', 'pass', 'warning', 'fail', 'error', 'skipped')),
            message     TEXT,
            url         TEXT,
            revision    TEXT,                              -- catalog revision it ran under
            trigger     TEXT NOT NULL DEFAULT 'schedule' CHECK (trigger IN ('schedule', 'ad-hoc')),
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            finished_at TEXT,
            CHECK ((status = 'completed') = (result <> 'unknown')),
            CHECK ((status IN ('completed', 'timed-out', 'error')) = (finished_at IS NOT NULL))
        );
        CREATE INDEX IF NOT EXISTS results_by_pair ON results (check_id, service_id, id);
        CREATE INDEX IF NOT EXISTS results_open ON results (status) WHERE status IN ('pending', 'sent');
        CREATE INDEX IF NOT EXISTS results_by_service ON results (service_id, id);

        CREATE TRIGGER IF NOT EXISTS results_never_deleted BEFORE DELETE ON results
        BEGIN
            SELECT RAISE(ABORT, 'results can never be deleted');
        END;

        CREATE TRIGGER IF NOT EXISTS results_finished_never_change BEFORE UPDATE ON results
        WHEN OLD.status IN ('completed', 'timed-out', 'error')
        BEGIN
            SELECT RAISE(ABORT, 'a finished result can never change');
        END;

        CREATE TRIGGER IF NOT EXISTS results_identity_never_changes BEFORE UPDATE ON results
        WHEN NEW.id IS NOT OLD.id OR NEW.check_id IS NOT OLD.check_id
          OR NEW.service_id IS NOT OLD.service_id OR NEW.created_at IS NOT OLD.created_at
          OR NEW.revision IS NOT OLD.revision OR NEW.trigger IS NOT OLD.trigger
        BEGIN
            SELECT RAISE(ABORT, 'the identity of a result can never change');
        END;

        CREATE TRIGGER IF NOT EXISTS results_status_moves_forward BEFORE UPDATE OF status ON results
        WHEN NOT (OLD.status = NEW.status OR OLD.status = 'pending'
                  OR (OLD.status = 'sent' AND NEW.status <> 'pending'))
        BEGIN
            SELECT RAISE(ABORT, 'a result status only moves forward');
        END;

        CREATE TABLE IF NOT EXISTS sync_runs (
            id                 INTEGER PRIMARY KEY,
            started_at         TEXT NOT NULL,
            finished_at        TEXT NOT NULL,
            duration_ms        REAL NOT NULL,
            outcome            TEXT NOT NULL,          -- applied | unchanged | refused | failed
            previous_revision  TEXT,                   -- what was applied before this run
            attempted_revision TEXT,                   -- what this run read
            applied_revision   TEXT,                   -- what is applied after this run
            created            INTEGER NOT NULL DEFAULT 0,
            updated            INTEGER NOT NULL DEFAULT 0,
            removed            INTEGER NOT NULL DEFAULT 0,
            unchanged          INTEGER NOT NULL DEFAULT 0,
            errors             TEXT NOT NULL DEFAULT '[]',   -- JSON list of {file,line,col,message}
            message            TEXT
        );

        CREATE TABLE IF NOT EXISTS api_tokens (
            id           INTEGER PRIMARY KEY,
            name         TEXT NOT NULL UNIQUE,
            token_hash   TEXT NOT NULL UNIQUE,          -- sha256 hex of the secret
            scopes       TEXT NOT NULL,                 -- JSON list
            created_at   TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at   TEXT
        );

        -- Write-back: a row once the result's line is pushed. Insert-only, like results.
        CREATE TABLE IF NOT EXISTS result_writes (
            result_id  INTEGER PRIMARY KEY REFERENCES results(id),
            commit_sha TEXT NOT NULL,
            written_at TEXT NOT NULL
        );
        CREATE TRIGGER IF NOT EXISTS result_writes_never_change BEFORE UPDATE ON result_writes
        BEGIN
            SELECT RAISE(ABORT, 'a recorded write-back can never change');
        END;
        CREATE TRIGGER IF NOT EXISTS result_writes_never_deleted BEFORE DELETE ON result_writes
        BEGIN
            SELECT RAISE(ABORT, 'a recorded write-back can never be deleted');
        END;

        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            delivery_id TEXT PRIMARY KEY,
            received_at TEXT NOT NULL
        );

        -- Write-back queue: finished results not yet pushed, filled by triggers, emptied once pushed,
        -- so a pass costs as much as its batch whatever the length of the history.
        CREATE TABLE IF NOT EXISTS writeback_queue (
            result_id INTEGER PRIMARY KEY REFERENCES results(id)
        );
        CREATE TRIGGER IF NOT EXISTS writeback_queue_on_finish AFTER UPDATE OF status ON results
        WHEN NEW.status IN ('completed', 'timed-out', 'error') AND OLD.status IN ('pending', 'sent')
        BEGIN
            INSERT OR IGNORE INTO writeback_queue (result_id) VALUES (NEW.id);
        END;
        CREATE TRIGGER IF NOT EXISTS writeback_queue_on_insert AFTER INSERT ON results
        WHEN NEW.status IN ('completed', 'timed-out', 'error')
        BEGIN
            INSERT OR IGNORE INTO writeback_queue (result_id) VALUES (NEW.id);
        END;
        -- The latest result per (check, service) among those already pushed: the summaries' source.
        CREATE TABLE IF NOT EXISTS writeback_latest (
            check_id    INTEGER NOT NULL,
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            result_id   INTEGER NOT NULL,
            PRIMARY KEY (check_id, service_key)
        ) WITHOUT ROWID;

        -- Dashboard: the latest finished result of each (check, service) pair, kept by triggers so
        -- the service x check matrix reads one small table instead of grouping all history.
        -- Finished results never change, so copying their fields here can never go stale.
        CREATE TABLE IF NOT EXISTS latest_results (
            check_id    INTEGER NOT NULL,
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            result_id   INTEGER NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            PRIMARY KEY (check_id, service_key)
        ) WITHOUT ROWID;
        -- Covering: the dashboard's totals read it without touching the table.
        CREATE INDEX IF NOT EXISTS latest_results_by_service
            ON latest_results (service_key, check_id, status, result, created_at);
        CREATE TRIGGER IF NOT EXISTS latest_results_on_finish AFTER UPDATE OF finished_at ON results
        WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
        BEGIN
            INSERT INTO latest_results (check_id, service_key, result_id, status, result, created_at, finished_at)
            VALUES (NEW.check_id, coalesce(NEW.service_id, 0), NEW.id, NEW.status, NEW.result,
                    NEW.created_at, NEW.finished_at)
            ON CONFLICT (check_id, service_key) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                created_at = excluded.created_at, finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_results.result_id;
        END;
        CREATE TRIGGER IF NOT EXISTS latest_results_on_insert AFTER INSERT ON results
        WHEN NEW.finished_at IS NOT NULL
        BEGIN
            INSERT INTO latest_results (check_id, service_key, result_id, status, result, created_at, finished_at)
            VALUES (NEW.check_id, coalesce(NEW.service_id, 0), NEW.id, NEW.status, NEW.result,
                    NEW.created_at, NEW.finished_at)
            ON CONFLICT (check_id, service_key) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                created_at = excluded.created_at, finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_results.result_id;
        END;
        CREATE INDEX IF NOT EXISTS results_by_check ON results (check_id, id);

        -- Dispatch: when each (check, service) pair last ran, in one index seek (due computation).
        CREATE INDEX IF NOT EXISTS results_by_pair_created ON results (check_id, service_id, created_at);
        -- Dispatch: a lease and a backoff per pending result, so that two schedulers (or the API's
        -- run-check and the scheduler) never send one result at once, and a crash is retried later.
        CREATE TABLE IF NOT EXISTS dispatch_attempts (
            result_id  INTEGER PRIMARY KEY REFERENCES results(id),
            attempts   INTEGER NOT NULL DEFAULT 0,
            not_before TEXT NOT NULL,                 -- nobody sends it again before this time
            holder     TEXT,                          -- the scheduler pass that holds the lease
            last_error TEXT                           -- the last transient failure, for `status`
        );
        """,
    ),
    (
        2,
        """
        -- Version 1 landed in two shapes: the first build's, and a later one's to which (before the
        -- rule above) these tables and indexes had been added in place. Every statement up to
        -- latest_runs is idempotent, so both shapes end here with one schema.
        DROP INDEX IF EXISTS results_by_pair_created;  -- the due computation reads dispatch_pairs
        -- Covering: the dashboard's totals and the matrix's per-page read (every column) use it
        -- without touching the table.
        DROP INDEX IF EXISTS latest_results_by_service;
        CREATE INDEX latest_results_by_service
            ON latest_results (service_key, check_id, status, result, created_at, result_id, finished_at);

        -- Dispatch: per (check, service) pair, when its newest result was created and how many of
        -- its results are open, kept by triggers, so the due computation reads one small row per
        -- pair (an integer-key seek) instead of searching the history. The key packs both ids.
        CREATE TABLE IF NOT EXISTS dispatch_pairs (
            pair_key        INTEGER PRIMARY KEY,      -- check_id * 2^32 + (service_id or 0)
            last_created_at TEXT NOT NULL,
            open_results    INTEGER NOT NULL          -- results pending or sent
        );
        CREATE TRIGGER IF NOT EXISTS dispatch_pairs_on_insert AFTER INSERT ON results
        BEGIN
            INSERT INTO dispatch_pairs (pair_key, last_created_at, open_results)
            VALUES (NEW.check_id * 4294967296 + coalesce(NEW.service_id, 0), NEW.created_at,
                    NEW.status IN ('pending', 'sent'))
            ON CONFLICT (pair_key) DO UPDATE SET
                last_created_at = max(last_created_at, excluded.last_created_at),
                open_results = open_results + excluded.open_results;
        END;
        -- One write per PATCH: a single integer-key update. (Statuses only move forward, open to
        -- finished, and a result's check, service and created_at never change: see above.)
        CREATE TRIGGER IF NOT EXISTS dispatch_pairs_on_finish AFTER UPDATE OF status ON results
        WHEN OLD.status IN ('pending', 'sent') AND NEW.status NOT IN ('pending', 'sent')
        BEGIN
            UPDATE dispatch_pairs SET open_results = open_results - 1
            WHERE pair_key = NEW.check_id * 4294967296 + coalesce(NEW.service_id, 0);
        END;
        INSERT INTO dispatch_pairs (pair_key, last_created_at, open_results)
        SELECT check_id * 4294967296 + coalesce(service_id, 0), max(created_at), sum(status IN ('pending', 'sent'))
        FROM results WHERE true GROUP BY check_id, service_id
        ON CONFLICT (pair_key) DO NOTHING;

        -- Leases still held: what a restart checks for a dead predecessor's, without a full scan.
        CREATE INDEX IF NOT EXISTS dispatch_leases ON dispatch_attempts (not_before) WHERE holder IS NOT NULL;

        -- latest_runs (derived data, rebuilt from results), now keyed by check slug, so one
        -- service's rows come out in the order the API lists them (no sort), and carrying each
        -- row's JSON, so GET /api/services/{slug} joins ready text instead of building 50 objects
        -- per request. A check's slug never changes for its id, so copying it here is safe.
        DROP TRIGGER IF EXISTS latest_runs_on_insert;
        DROP TRIGGER IF EXISTS latest_runs_on_update;
        DROP TABLE IF EXISTS latest_runs;
        CREATE TABLE latest_runs (
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            check_slug  TEXT NOT NULL,
            check_id    INTEGER NOT NULL,
            result_id   INTEGER NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            url         TEXT,
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            finished_at TEXT,
            json        TEXT GENERATED ALWAYS AS (json_object(
                'id', result_id, 'check', check_slug, 'status', status, 'result', result, 'url', url,
                'created_at', created_at, 'sent_at', sent_at, 'finished_at', finished_at)) STORED,
            PRIMARY KEY (service_key, check_slug)
        ) WITHOUT ROWID;
        CREATE TRIGGER latest_runs_on_insert AFTER INSERT ON results
        BEGIN
            INSERT INTO latest_runs (service_key, check_slug, check_id, result_id, status, result, url, created_at,
                                     sent_at, finished_at)
            VALUES (coalesce(NEW.service_id, 0), (SELECT slug FROM checks WHERE id = NEW.check_id), NEW.check_id,
                    NEW.id, NEW.status, NEW.result, NEW.url, NEW.created_at, NEW.sent_at, NEW.finished_at)
            ON CONFLICT (service_key, check_slug) DO UPDATE SET
                result_id = excluded.result_id, status = excluded.status, result = excluded.result,
                url = excluded.url, created_at = excluded.created_at, sent_at = excluded.sent_at,
                finished_at = excluded.finished_at
            WHERE excluded.result_id > latest_runs.result_id;
        END;
        -- One primary-key update per status change, and only when the result is its pair's newest.
        CREATE TRIGGER latest_runs_on_update AFTER UPDATE OF status, result, url, sent_at, finished_at ON results
        BEGIN
            UPDATE latest_runs SET status = NEW.status, result = NEW.result, url = NEW.url,
                sent_at = NEW.sent_at, finished_at = NEW.finished_at
            WHERE service_key = coalesce(NEW.service_id, 0)
              AND check_slug = (SELECT slug FROM checks WHERE id = NEW.check_id) AND result_id = NEW.id;
        END;
        INSERT INTO latest_runs (service_key, check_slug, check_id, result_id, status, result, url, created_at,
                                 sent_at, finished_at)
        SELECT coalesce(r.service_id, 0), c.slug, r.check_id, r.id, r.status, r.result, r.url, r.created_at,
               r.sent_at, r.finished_at
        FROM results AS r JOIN checks AS c ON c.id = r.check_id
        WHERE r.id IN (SELECT max(id) FROM results GROUP BY check_id, service_id);
        """,
    ),
    (
        3,
        """
        -- Stores made by the first build reach version 2 with the derived tables of version 1's later
        -- shape empty (the migrator replays version 1 for them first: see sqlite.py). Fill them from
        -- the history; on every other store each statement finds its rows already there.
        INSERT INTO latest_results (check_id, service_key, result_id, status, result, created_at, finished_at)
        SELECT r.check_id, coalesce(r.service_id, 0), r.id, r.status, r.result, r.created_at, r.finished_at
        FROM results AS r
        WHERE r.id IN (SELECT max(id) FROM results WHERE finished_at IS NOT NULL GROUP BY check_id, service_id)
        ON CONFLICT (check_id, service_key) DO NOTHING;
        INSERT INTO writeback_queue (result_id)
        SELECT id FROM results
        WHERE finished_at IS NOT NULL AND id NOT IN (SELECT result_id FROM result_writes)
        ON CONFLICT (result_id) DO NOTHING;
        INSERT INTO writeback_latest (check_id, service_key, result_id)
        SELECT r.check_id, coalesce(r.service_id, 0), max(r.id)
        FROM result_writes AS w JOIN results AS r ON r.id = w.result_id
        GROUP BY r.check_id, coalesce(r.service_id, 0)
        ON CONFLICT (check_id, service_key) DO NOTHING;
        """,
    ),
    (
        4,
        """
        -- Dispatch at organisation scale (DESIGN.md section 9).
        -- How many pairs of a check one repository_dispatch carries (`batch:`; 1 = one run per pair).
        ALTER TABLE checks ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 1000);
        -- One row per batch dispatch: its check and its results, as a JSON list of ids (one row per
        -- batch, not per result: half a million pairs are 500 rows). GET /api/batches/{id} reads it.
        -- A result may appear in a later batch too, when its first batch's send failed transiently.
        CREATE TABLE IF NOT EXISTS dispatch_batches (
            id         INTEGER PRIMARY KEY,
            check_id   INTEGER NOT NULL REFERENCES checks(id),
            result_ids TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        -- The GitHub budget: one row per request made, pruned past the longest window, so every
        -- process sharing the store counts the same requests; paused_until from rate-limit answers.
        CREATE TABLE IF NOT EXISTS dispatch_budget (
            id      INTEGER PRIMARY KEY,
            sent_at REAL NOT NULL                      -- Unix seconds
        );
        CREATE INDEX IF NOT EXISTS dispatch_budget_by_time ON dispatch_budget (sent_at);
        """,
    ),
    (
        5,
        """
        -- Scorecards, waivers and campaigns (issue 13). catalog_files takes their kinds: SQLite
        -- cannot change a CHECK, so the table is rebuilt as it was with the wider one.
        CREATE TABLE catalog_files_v5 (
            path     TEXT PRIMARY KEY,
            kind     TEXT NOT NULL
                     CHECK (kind IN ('service', 'check', 'catalog', 'scorecard', 'waiver', 'campaign')),
            slug     TEXT,
            digest   TEXT NOT NULL,
            error    TEXT
        );
        INSERT INTO catalog_files_v5 (path, kind, slug, digest, error)
        SELECT path, kind, slug, digest, error FROM catalog_files;
        DROP TABLE catalog_files;
        ALTER TABLE catalog_files_v5 RENAME TO catalog_files;

        -- The last good definition of each scorecard, waiver and campaign, kept whole as JSON.
        CREATE TABLE IF NOT EXISTS definitions (
            kind       TEXT NOT NULL CHECK (kind IN ('scorecard', 'waiver', 'campaign')),
            slug       TEXT NOT NULL,
            path       TEXT NOT NULL,
            digest     TEXT NOT NULL,
            body       TEXT NOT NULL,                 -- the validated file as JSON
            error      TEXT,                          -- its file's current error, if any
            removed_at TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (kind, slug)
        ) WITHOUT ROWID;

        -- Each service's level per rubric (a scorecard's slug, or `campaign:SLUG` for a campaign
        -- of checks), kept as results arrive and syncs apply: pages read it, never recompute it.
        CREATE TABLE IF NOT EXISTS scorecard_levels (
            rubric      TEXT NOT NULL,
            service_id  INTEGER NOT NULL,
            level       INTEGER NOT NULL,             -- levels held, 0 .. number of levels
            checks      TEXT NOT NULL,                -- JSON {check slug: state} of every counted check
            valid_until TEXT,                         -- when a met result goes stale or a waiver ends
            updated_at  TEXT NOT NULL,
            PRIMARY KEY (rubric, service_id)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS scorecard_levels_due ON scorecard_levels (valid_until);
        CREATE INDEX IF NOT EXISTS scorecard_levels_by_service ON scorecard_levels (service_id);

        -- A year of trend: each (rubric, service) level once a day, and the counts per level of
        -- the whole rubric (scope 'all') and of each team (scope 'team', team = owner) that day.
        CREATE TABLE IF NOT EXISTS scorecard_snapshots (
            rubric     TEXT NOT NULL,
            service_id INTEGER NOT NULL,
            day        TEXT NOT NULL,
            level      INTEGER NOT NULL,
            PRIMARY KEY (rubric, service_id, day)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS scorecard_trend (
            rubric   TEXT NOT NULL,
            scope    TEXT NOT NULL CHECK (scope IN ('all', 'team')),
            team     TEXT NOT NULL,
            day      TEXT NOT NULL,
            level    INTEGER NOT NULL,
            services INTEGER NOT NULL,
            PRIMARY KEY (rubric, scope, team, day, level)
        ) WITHOUT ROWID;
        """,
    ),
    (
        6,
        """
        -- Notifications. Every event, written in the transaction of its cause; never changed, never
        -- deleted. `event_key` makes an event once-only (a file's error at one digest, ...). The type
        -- filter of GET /api/events reads by id: a few types, no index of its own to keep per event.
        CREATE TABLE events (
            id         INTEGER PRIMARY KEY,
            type       TEXT NOT NULL CHECK (type IN ('failing', 'recovered', 'level-changed', 'waiver-expiring',
                                                     'waiver-expired', 'campaign-overdue', 'sync-failed',
                                                     'tamper-detected')),
            created_at TEXT NOT NULL,
            team       TEXT,                            -- whom it concerns: the service's owner
            service    TEXT,                            -- slugs, as they were
            check_slug TEXT,
            result_id  INTEGER,
            outcome    TEXT,                            -- failing / recovered: the result's outcome
            summary    TEXT NOT NULL,                   -- one line for people
            data       TEXT NOT NULL DEFAULT '{}',      -- JSON for receivers
            event_key  TEXT
        );
        CREATE UNIQUE INDEX events_once ON events (event_key) WHERE event_key IS NOT NULL;
        CREATE INDEX events_by_service ON events (service, id);
        CREATE INDEX events_by_check ON events (check_slug, id);
        CREATE TRIGGER events_never_change BEFORE UPDATE ON events
        BEGIN
            SELECT RAISE(ABORT, 'an event can never change');
        END;
        CREATE TRIGGER events_never_deleted BEFORE DELETE ON events
        BEGIN
            SELECT RAISE(ABORT, 'an event can never be deleted');
        END;

        -- The outbox: events not yet handed to their routes, filled with each event in the cause's
        -- statement (by the triggers below, and by `db.events.emit`: the only writers of events), emptied
        -- by the sender in the transaction that records the deliveries. Not a trigger on events: a
        -- nested trigger's program costs each failing answer ~3 us more (bench/bench_notify.py). No
        -- foreign key: it is written with the id just inserted, and an event is never deleted; the
        -- key's check would cost every event (on PostgreSQL a row lock on the event) for nothing.
        CREATE TABLE event_outbox (
            event_id INTEGER PRIMARY KEY
        );

        -- failing / recovered: a pair's latest finished result (latest_results, kept by the triggers of
        -- version 1, which move it only forward: a late answer to an older run moves nothing) changed
        -- from passing to failing or back. So every path that finishes results (answers, bulk answers,
        -- time-outs, dispatch errors) records its events in its own transaction, once per change, and an
        -- answer that changes nothing costs one comparison. Failing = outcome fail, error or timed-out
        -- (as the dashboard counts failing: api/dashboard.py FAILING).
        CREATE TRIGGER events_on_first_result AFTER INSERT ON latest_results
        WHEN NEW.status IN ('timed-out', 'error') OR NEW.result IN ('fail', 'error')
        BEGIN
            INSERT INTO events (type, created_at, team, service, check_slug, result_id, outcome, summary)
            SELECT 'failing', NEW.finished_at, s.owner, s.slug, c.slug, NEW.result_id,
                   CASE WHEN NEW.status = 'completed' THEN NEW.result ELSE NEW.status END,
                   coalesce(s.slug, c.slug) || ': check ' || c.slug || ' is failing ('
                   || CASE WHEN NEW.status = 'completed' THEN NEW.result ELSE NEW.status END || ')'
            FROM checks AS c LEFT JOIN services AS s ON s.id = NEW.service_key WHERE c.id = NEW.check_id;
            INSERT INTO event_outbox (event_id) VALUES (last_insert_rowid());
        END;
        CREATE TRIGGER events_on_changed_result AFTER UPDATE ON latest_results
        WHEN (NEW.status IN ('timed-out', 'error') OR NEW.result IN ('fail', 'error'))
          <> (OLD.status IN ('timed-out', 'error') OR OLD.result IN ('fail', 'error'))
        BEGIN
            INSERT INTO events (type, created_at, team, service, check_slug, result_id, outcome, summary)
            SELECT CASE WHEN NEW.status IN ('timed-out', 'error') OR NEW.result IN ('fail', 'error')
                        THEN 'failing' ELSE 'recovered' END,
                   NEW.finished_at, s.owner, s.slug, c.slug, NEW.result_id,
                   CASE WHEN NEW.status = 'completed' THEN NEW.result ELSE NEW.status END,
                   coalesce(s.slug, c.slug) || ': check ' || c.slug
                   || CASE WHEN NEW.status IN ('timed-out', 'error') OR NEW.result IN ('fail', 'error')
                           THEN ' is failing (' ELSE ' recovered (' END
                   || CASE WHEN NEW.status = 'completed' THEN NEW.result ELSE NEW.status END || ')'
            FROM checks AS c LEFT JOIN services AS s ON s.id = NEW.service_key WHERE c.id = NEW.check_id;
            INSERT INTO event_outbox (event_id) VALUES (last_insert_rowid());
        END;

        -- One delivery per (route, event): at least once, retried with backoff, failed after the last try.
        CREATE TABLE event_deliveries (
            id          INTEGER PRIMARY KEY,
            route       TEXT NOT NULL,
            event_id    INTEGER NOT NULL REFERENCES events(id),
            team        TEXT,                           -- a digest folds one team's deliveries
            status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts    INTEGER NOT NULL DEFAULT 0,
            not_before  TEXT NOT NULL,                  -- not sent before (a retry's backoff, a digest's window end)
            last_error  TEXT,
            finished_at TEXT,
            UNIQUE (route, event_id)
        );
        CREATE INDEX event_deliveries_due ON event_deliveries (not_before, id) WHERE status = 'pending';
        CREATE INDEX event_deliveries_failed ON event_deliveries (id) WHERE status = 'failed';
        """,
    ),
    (
        7,
        """
        -- Trust (docs/operating.md, "Attested results"): the GitHub OIDC claims of the Action run that
        -- answered a result (JSON: repository, workflow_ref, run_id, run_attempt, sha, actor). A table of
        -- its own, insert-only like results: the answer's UPDATE keeps its row size (a row grown in place
        -- cost the PATCH ~50 us: bench/bench_trust.py oidc), and results written before keep their shape.
        CREATE TABLE IF NOT EXISTS result_attestations (
            result_id   INTEGER PRIMARY KEY REFERENCES results(id),
            attestation TEXT NOT NULL
        );
        CREATE TRIGGER IF NOT EXISTS result_attestations_with_the_answer BEFORE INSERT ON result_attestations
        WHEN (SELECT status FROM results WHERE id = NEW.result_id) IS NOT 'completed'
        BEGIN
            SELECT RAISE(ABORT, 'an attestation is recorded only with the answer that completes a result');
        END;
        CREATE TRIGGER IF NOT EXISTS result_attestations_never_change BEFORE UPDATE ON result_attestations
        BEGIN
            SELECT RAISE(ABORT, 'an attestation can never change');
        END;
        CREATE TRIGGER IF NOT EXISTS result_attestations_never_deleted BEFORE DELETE ON result_attestations
        BEGIN
            SELECT RAISE(ABORT, 'an attestation can never be deleted');
        END;
        """,
    ),
    (
        8,
        """
        -- Results by status and outcome, kept by triggers, so /metrics reads a few rows instead of
        -- counting a table of millions on every scrape. Results are never deleted, so a count only
        -- moves when a result is created or its status or outcome changes.
        CREATE TABLE IF NOT EXISTS result_counts (
            status TEXT NOT NULL,
            result TEXT NOT NULL,
            count  INTEGER NOT NULL,
            PRIMARY KEY (status, result)
        ) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS result_counts_on_insert AFTER INSERT ON results
        BEGIN
            INSERT INTO result_counts (status, result, count) VALUES (NEW.status, NEW.result, 1)
            ON CONFLICT (status, result) DO UPDATE SET count = count + 1;
        END;
        -- One statement per answer (the hot write): the old pair's count down, the new one's up.
        CREATE TRIGGER IF NOT EXISTS result_counts_on_update AFTER UPDATE OF status, result ON results
        WHEN OLD.status IS NOT NEW.status OR OLD.result IS NOT NEW.result
        BEGIN
            INSERT INTO result_counts (status, result, count) VALUES (OLD.status, OLD.result, -1), (NEW.status, NEW.result, 1)
            ON CONFLICT (status, result) DO UPDATE SET count = count + excluded.count;
        END;
        INSERT INTO result_counts (status, result, count)
        SELECT status, result, count(*) FROM results WHERE true GROUP BY status, result
        ON CONFLICT (status, result) DO NOTHING;

        -- The files with errors, for /metrics and every sync's partial index read, without a scan.
        CREATE INDEX IF NOT EXISTS catalog_files_with_errors ON catalog_files (path) WHERE error IS NOT NULL;
        -- Open results by age for /metrics: the index holds the ages, so no row of the table is read.
        CREATE INDEX IF NOT EXISTS results_open_by_created ON results (status, created_at) WHERE status IN ('pending', 'sent');
        """,
    ),
    (
        9,
        """
        -- Creating results at organisation scale (issue 12): half a million new results cost ~24 us each
        -- while every row ran five insert triggers. A result is now born pending, and only
        -- `db.dispatch.create_due` creates results: it writes the derived rows of all its new results
        -- (dispatch_pairs, latest_runs, result_counts) in the same transaction, one statement each, in
        -- key order (bench/bench_dispatch.py --part batch). The update triggers stay as they were.
        DROP TRIGGER IF EXISTS dispatch_pairs_on_insert;
        DROP TRIGGER IF EXISTS latest_runs_on_insert;
        DROP TRIGGER IF EXISTS result_counts_on_insert;
        -- A pending result has no place in the write-back queue nor in latest_results (finished results
        -- only), so their insert triggers had nothing to do: the rule below keeps it so.
        DROP TRIGGER IF EXISTS writeback_queue_on_insert;
        DROP TRIGGER IF EXISTS latest_results_on_insert;
        CREATE TRIGGER IF NOT EXISTS results_born_pending BEFORE INSERT ON results
        WHEN NEW.status <> 'pending'
        BEGIN
            SELECT RAISE(ABORT, 'a result is created pending');
        END;
        """,
    ),
    (
        10,
        r"""
        -- What a one-file sync reads of the catalog, found without scanning it (bench/bench_sync.py at
        -- 100,000 services: 30 ms of scans). The files of several documents (`file#N`) are few:
        CREATE INDEX IF NOT EXISTS catalog_files_documents ON catalog_files (path) WHERE path LIKE '%#%';
        -- services not removed are counted as all of them less the removed ones, which are few:
        CREATE INDEX IF NOT EXISTS services_removed ON services (id) WHERE removed_at IS NOT NULL;
        """,
    ),
    (
        11,
        r"""
        -- PostgreSQL's version 11 keeps result_counts per statement (a row rewritten once per result in
        -- one transaction grows slower with each rewrite there). SQLite rewrites a row in place: its
        -- per-row triggers stay, and this version changes nothing here.
        """,
    ),
    (
        12,
        r"""
        -- latest_runs' row JSON is computed when read (VIRTUAL), no longer stored with every change. A
        -- batch's answers are one check over many services: with latest_runs keyed by service (as
        -- GET /api/services/{slug} reads it), every answer's trigger rewrites a row on a page of its own,
        -- and building and storing its JSON there was half of that trigger's cost (bench/bench_dispatch.py
        -- --part bulk). Read, the JSON of a service's rows costs its GET a few microseconds. Keyed by check
        -- instead, a batch's rows were neighbours, but a service's GET read fifty pages: 56 -> 260 us in
        -- process at 10,000 services x 50 checks, so the key stays. The rows and the text are the same.
        DROP TRIGGER IF EXISTS latest_runs_on_update;
        CREATE TABLE latest_runs_computed (
            service_key INTEGER NOT NULL,              -- service_id, or 0 for checks with services: none
            check_slug  TEXT NOT NULL,
            check_id    INTEGER NOT NULL,
            result_id   INTEGER NOT NULL,
            status      TEXT NOT NULL,
            result      TEXT NOT NULL,
            url         TEXT,
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            finished_at TEXT,
            json        TEXT GENERATED ALWAYS AS (json_object(
                'id', result_id, 'check', check_slug, 'status', status, 'result', result, 'url', url,
                'created_at', created_at, 'sent_at', sent_at, 'finished_at', finished_at)) VIRTUAL,
            PRIMARY KEY (service_key, check_slug)
        ) WITHOUT ROWID;
        INSERT INTO latest_runs_computed (service_key, check_slug, check_id, result_id, status, result, url,
                                          created_at, sent_at, finished_at)
        SELECT service_key, check_slug, check_id, result_id, status, result, url, created_at, sent_at, finished_at
        FROM latest_runs ORDER BY service_key, check_slug;
        DROP TABLE latest_runs;
        ALTER TABLE latest_runs_computed RENAME TO latest_runs;
        -- One primary-key update per status change, and only when the result is its pair's newest.
        CREATE TRIGGER latest_runs_on_update AFTER UPDATE OF status, result, url, sent_at, finished_at ON results
        BEGIN
            UPDATE latest_runs SET status = NEW.status, result = NEW.result, url = NEW.url,
                sent_at = NEW.sent_at, finished_at = NEW.finished_at
            WHERE service_key = coalesce(NEW.service_id, 0)
              AND check_slug = (SELECT slug FROM checks WHERE id = NEW.check_id) AND result_id = NEW.id;
        END;
        """,
    ),
    (
        13,
        """
        -- Finished results per check and UTC day, for the check page's pass rates of the last 30 days.
        -- The page grouped every finished result the check ever had: with 10,000 services and 30 days of
        -- daily results, /checks/{slug} took 328 ms (bench/bench_pages.py --services 10000 --checks 2
        -- --history 30), and it grew with every day kept. A finished result never changes, so a day's
        -- counts only grow, by one when a result of the check finishes: the same row for a whole day.
        CREATE TABLE IF NOT EXISTS check_days (
            check_id INTEGER NOT NULL,
            day      TEXT NOT NULL,
            finished INTEGER NOT NULL,
            passed   INTEGER NOT NULL,
            failed   INTEGER NOT NULL,
            PRIMARY KEY (check_id, day)
        ) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS check_days_on_finish AFTER UPDATE OF finished_at ON results
        WHEN NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL
        BEGIN
            INSERT INTO check_days (check_id, day, finished, passed, failed)
            VALUES (NEW.check_id, substr(NEW.finished_at, 1, 10), 1,
                    CASE WHEN NEW.result = 'pass' THEN 1 ELSE 0 END,
                    CASE WHEN NEW.result IN ('fail', 'error') OR NEW.status <> 'completed' THEN 1 ELSE 0 END)
            ON CONFLICT (check_id, day) DO UPDATE SET finished = finished + 1,
                passed = passed + excluded.passed, failed = failed + excluded.failed;
        END;
        INSERT INTO check_days (check_id, day, finished, passed, failed)
        SELECT check_id, substr(finished_at, 1, 10), count(*), count(*) FILTER (WHERE result = 'pass'),
               count(*) FILTER (WHERE result IN ('fail', 'error') OR status <> 'completed')
        FROM results WHERE finished_at IS NOT NULL GROUP BY check_id, substr(finished_at, 1, 10)
        ON CONFLICT (check_id, day) DO NOTHING;
        """,
    ),
    (
        14,
        """
        -- The type filter of GET /api/events and /events reads an index of its own (version 6 left it
        -- reading by id): a type with few events among millions read them all, 110 ms at 2,000,000
        -- events. One more index entry per event; events come with changes, not with every answer.
        CREATE INDEX IF NOT EXISTS events_by_type ON events (type, id);
        """,
    ),
]


def _split_statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements
