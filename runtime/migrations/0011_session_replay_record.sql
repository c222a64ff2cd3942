-- The record against replays across challenge sessions (runtime/src/challenge/replay.rs): the
-- frames of every session a verification or identification accepted for a subject, as their
-- fingerprints (16x16 luma cells, never images; at most 64 a session), kept for
-- FACEKEY_SESSION_REPLAY_WINDOW_SECS (a day by default) and at most the subject's latest 8
-- sessions. A later session for the subject, on any replica, repeating those frames is a
-- replayed recording and is rejected. The fingerprints are sealed with the template key
-- (AES-256-GCM, bound to the subject and the session id) like templates: 64 frames of 256
-- bytes a session at most, so the check bounds a row at 128 KiB with room to spare. Rows go
-- with their subject, and are deleted once past their window by each replica's sweep.
CREATE TABLE facekey_session_replay_record (
    subject text NOT NULL,
    -- The accepted session's id.
    session_id text NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    -- verified_at plus the window in force when the row was written: rows past it are no
    -- longer compared, and each replica's sweep deletes them.
    expires_at timestamptz NOT NULL,
    sealed_key_id text NOT NULL,
    sealed_nonce bytea NOT NULL,
    sealed bytea NOT NULL CHECK (octet_length(sealed) <= 131072),
    PRIMARY KEY (subject, session_id)
);

CREATE INDEX facekey_session_replay_record_expires_at
    ON facekey_session_replay_record (expires_at);
