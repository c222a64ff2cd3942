-- FaceKey challenge-liveness sessions shared by every replica (runtime/src/challenge/pg.rs), so
-- any replica serves any call of a session and a restart keeps open sessions. One row per
-- session; every time is the database's clock (now()). Frames are applied under the row's lock
-- (SELECT … FOR UPDATE), a passed session is consumed under it (consumed = false → true once),
-- and sessions are opened under a transaction-level advisory lock, so the bounds hold across
-- replicas. Rows are deleted one TTL after they expire.
CREATE TABLE facekey_liveness_sessions (
    -- 128 random bits, hex.
    id text PRIMARY KEY,
    -- SHA-256 (hex) of the id of the API key that opened the session: the key binding. Never
    -- the key itself.
    key_hash text NOT NULL,
    -- The subject the session is bound to, if any.
    subject text,
    -- The challenge: action names in order (blink, turn_left, …).
    challenge text[] NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    frames_received integer NOT NULL DEFAULT 0 CHECK (frames_received >= 0),
    -- verdict->outcome, kept as a column for the bounds and the sweep.
    outcome text NOT NULL DEFAULT 'in_progress'
        CHECK (outcome IN ('in_progress', 'passed', 'failed')),
    -- The checker's latest verdict (actions, reasons, per-frame feedback, diagnostics): no
    -- biometric data.
    verdict jsonb NOT NULL,
    -- Set once by the verification that used the passed session.
    consumed boolean NOT NULL DEFAULT false,
    -- The frame observations while in progress (landmarks, eye state, embeddings, fingerprints;
    -- never images), then only the best frame's observation once passed: biometric data, sealed
    -- with the template key (AES-256-GCM, bound to the session id) like templates. At most
    -- FACEKEY_SESSION_MAX_FRAMES observations of a few KB; the check bounds the row whatever the
    -- setting.
    sealed_key_id text,
    sealed_nonce bytea,
    sealed bytea CHECK (octet_length(sealed) <= 4194304)
);

CREATE INDEX facekey_liveness_sessions_key ON facekey_liveness_sessions (key_hash);
CREATE INDEX facekey_liveness_sessions_expires_at ON facekey_liveness_sessions (expires_at);
