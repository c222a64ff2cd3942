-- A session's sealed observations now carry both embedding models' values (dlib's 128 and
-- faceres-deep's 1024 per frame, about 18 KB of JSON a frame at most), so that a session is
-- matched fused on every replica. At FACEKEY_SESSION_MAX_FRAMES' bound (256, runtime/src/
-- config.rs) that is about 4.7 MB: the row's check grows from 4 MiB to 8 MiB, still bounding
-- the row whatever the setting.
ALTER TABLE facekey_liveness_sessions
  DROP CONSTRAINT facekey_liveness_sessions_sealed_check,
  ADD CONSTRAINT facekey_liveness_sessions_sealed_check CHECK (octet_length(sealed) <= 8388608);
