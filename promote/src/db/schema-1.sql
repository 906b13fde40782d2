-- Version 0 to 1: objects, their references, and the runs promoted.
CREATE TABLE objects (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('artifact', 'bundle', 'source')),
    artifact        TEXT,
    tree_signature  TEXT,
    size            INTEGER NOT NULL,
    registered_at   INTEGER NOT NULL,
    executor        TEXT,
    run_id          TEXT,
    freebsd_version TEXT,
    kernconf        TEXT
);
CREATE TABLE refs (
    referrer  INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    reference INTEGER NOT NULL REFERENCES objects(id) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
);
CREATE INDEX refs_reference ON refs(reference);
CREATE INDEX objects_run_id ON objects(run_id);
CREATE TABLE promoted_runs (
    run_id      TEXT PRIMARY KEY,
    promoted_at INTEGER NOT NULL
);
