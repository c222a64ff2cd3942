-- Escalating locks (runtime/src/lockout.rs, Policy::lock_for): how many locks in a row a subject
-- has had with no successful verification in between. A lock lasts FACEKEY_LOCKOUT_SECS doubled
-- per lock before it, up to a cap; a success (which deletes the row once unlocked) resets it, as
-- does the row's expiry a cap's length after the last lock ended. Older releases ignore the
-- column (their locks do not escalate).
ALTER TABLE facekey_lockouts ADD COLUMN lock_streak integer NOT NULL DEFAULT 0;
