-- Every replica reads the locks in force every 5 s (runtime/src/lockout.rs,
-- Ledger::active_locks) to keep a copy that holds through a database outage. A partial index
-- on the locked rows keeps that read to them, however many subjects have failures counted (a
-- spray of failed verifications across many subjects).
CREATE INDEX facekey_lockouts_locked_until ON facekey_lockouts (locked_until)
  WHERE locked_until IS NOT NULL;
