-- A challenge-liveness session's frames as rows of their own, one per frames call (batch), so
-- that a call writes its own batch only: until now each call rewrote the session row's whole
-- sealed list of observations (14-18 KB a frame with both embedding models' values, about
-- 2.2 MB at the default 160-frame bound), a session's writes growing with the square of its
-- frames. The session row keeps the verdict and, once passed, what verify needs; the batches
-- are deleted when the session ends, when it expires (each replica's sweep) and with it.
-- Sealed with the template key like the row (AES-256-GCM, bound to the session id, the batch
-- number and the key hash): at most 8 frames a batch, so the check bounds a row at 1 MiB.
CREATE TABLE facekey_liveness_session_frames (
    session_id text NOT NULL REFERENCES facekey_liveness_sessions (id) ON DELETE CASCADE,
    -- 0, 1, 2 ... in the order the batches were applied (under the session row's lock).
    batch integer NOT NULL CHECK (batch >= 0),
    sealed_key_id text NOT NULL,
    sealed_nonce bytea NOT NULL,
    sealed bytea NOT NULL CHECK (octet_length(sealed) <= 1048576),
    PRIMARY KEY (session_id, batch)
);
