-- Every replica also copies the ended locks whose streak is still remembered (runtime/src/
-- lockout.rs, Ledger::active_locks), so a lock that ended just before a database outage still
-- escalates the next one taken in a replica's memory. A partial index on the rows that ever
-- locked keeps that read to them, however many subjects have failures counted.
CREATE INDEX facekey_lockouts_streak_expires ON facekey_lockouts (expires_at)
  WHERE lock_streak > 0;
