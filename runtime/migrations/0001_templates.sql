-- FaceKey template store, version 1: subjects and their sealed face templates.
-- Embeddings are never stored in clear: ciphertext is AES-256-GCM under the key named by key_id.
CREATE TABLE facekey_subjects (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE facekey_templates (
    id uuid PRIMARY KEY,
    subject_id uuid NOT NULL REFERENCES facekey_subjects (id) ON DELETE CASCADE,
    model text NOT NULL,
    key_id text NOT NULL,
    nonce bytea NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext bytea NOT NULL,
    quality double precision,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX facekey_templates_subject_id ON facekey_templates (subject_id);
