-- FaceKey per-subject lockout ledger, shared by every replica (runtime/src/lockout.rs).
-- One row per subject with recent failed verifications or an active lock. Every time is the
-- database's clock (now()), so replicas with skewed clocks agree. A failure is counted under the
-- row's lock (one transaction), so replicas counting together can neither both miss the
-- threshold nor both lock. No foreign key: a row outlives a deleted subject only until it expires.
CREATE TABLE facekey_lockouts (
    subject text PRIMARY KEY,
    -- Failed verifications still inside the window (at most the threshold minus one).
    failures timestamptz[] NOT NULL DEFAULT '{}',
    -- Set while the subject is locked.
    locked_until timestamptz,
    -- When the row stops mattering (the lock's end or the last failure's window end): purged after.
    expires_at timestamptz NOT NULL
);

CREATE INDEX facekey_lockouts_expires_at ON facekey_lockouts (expires_at);
