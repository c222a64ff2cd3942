-- FaceKey subjects record the API key that created them (runtime/src/enrolments.rs), so one key
-- can be held to FACEKEY_MAX_SUBJECTS_PER_KEY subjects. The key's id from the keys file, never
-- the key. NULL for subjects created before this migration: they count against no key's quota.
-- A nullable column without a default: adding it rewrites no row.
ALTER TABLE facekey_subjects ADD COLUMN created_by text;
-- The quota is counted per key inside each creation (runtime/src/store/postgres.rs).
CREATE INDEX facekey_subjects_created_by ON facekey_subjects (created_by);
