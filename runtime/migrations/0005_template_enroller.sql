-- FaceKey templates record the API key that enrolled them (runtime/src/enrolments.rs), so one
-- key can be held to FACEKEY_MAX_TEMPLATES_PER_KEY templates. The key's id from the keys file,
-- never the key. NULL for templates enrolled before this migration: they count against no key's
-- quota. A nullable column without a default: adding it rewrites no row.
ALTER TABLE facekey_templates ADD COLUMN enrolled_by text;
-- The quota is counted per key inside each enrolment (runtime/src/store/postgres.rs).
CREATE INDEX facekey_templates_enrolled_by ON facekey_templates (enrolled_by);
