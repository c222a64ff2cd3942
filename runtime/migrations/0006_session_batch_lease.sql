-- A frames call holds its liveness session from its checks until its batch is applied (or it
-- gives the session back), as one replica's memory store does: batches sent through several
-- replicas at once are refused (409 session_busy) instead of merged, so every batch is judged
-- after the ones before it and a batch captured before frames already applied fails the
-- session (timestamps_not_increasing) on any replica. The lease runs out by itself after a
-- replica died holding it.
ALTER TABLE facekey_liveness_sessions ADD COLUMN busy_until timestamptz;
