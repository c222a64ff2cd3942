import { useId, useState } from "react";
import { type Subject, addFace, createSubject, deleteSubject, releaseLockout, typedSubjectId } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { ImagePicker, type PickedImage, useRevokeOnChange } from "../components/ImagePicker";
import { ScopeNotice } from "../components/ScopeNotice";
import { SubjectLookup } from "../components/SubjectLookup";
import { SubjectTable } from "../components/SubjectTable";
import { useAuth } from "../hooks/useAuth";
import { useKeyQuotas } from "../hooks/useKeyQuotas";
import { useSubjects } from "../hooks/useSubjects";
import { type Identity, describeQuotas, may, nearlyFull } from "../lib/auth";
import { knownSubjects } from "../lib/subjects";

const TITLE = (
  <>
    <h2>Enrol subjects</h2>
    <p className="lead">
      A subject is a person; each face image added becomes part of their template (embeddings only, never the image).
    </p>
  </>
);

/**
 * Enrolment: create subjects and add face images to them, and delete those it created (the
 * `enrol` scope); list them all and delete any (the `admin` scope).
 */
export function EnrolView() {
  const { identity } = useAuth();
  if (!may(identity, "enrol")) {
    return (
      <div className="view enrol">
        {TITLE}
        <ScopeNotice needs="enrol" what="Enrolling subjects and faces" identity={identity} />
      </div>
    );
  }
  return <EnrolForms admin={may(identity, "admin")} />;
}

function EnrolForms({ admin }: { admin: boolean }) {
  const { identity } = useAuth();
  // A listing cut off at `MAX_LISTED_SUBJECTS` still offers the subjects created or looked up here.
  const { subjects: listed, truncated, error: listError, reload } = useSubjects(admin);
  const { quotas, refresh: refreshQuotas } = useKeyQuotas(identity?.quotas);
  // Without `admin` the runtime lists nothing: the subjects created here are all the view knows.
  const [created, setCreated] = useState<Subject[]>([]);
  const subjects = admin ? listed : created;
  const [name, setName] = useState("");
  const [selected, setSelected] = useState<string>();
  const [image, setImage] = useState<PickedImage>();
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<{ where: "create" | "add" | "list"; error: unknown }>();
  const [status, setStatus] = useState("");
  const nameId = useId();
  const targetId = useId();
  useRevokeOnChange(image);

  const target: (Pick<Subject, "id" | "name"> & { faces?: number }) | undefined =
    subjects?.find((s) => s.id === selected) ??
    (!admin && selected ? { id: typedSubjectId(selected), name: selected } : undefined);

  const run = async (where: "create" | "add" | "list", action: () => Promise<string>) => {
    setBusy(true);
    setFailure(undefined);
    try {
      setStatus(await action());
      reload();
    } catch (error) {
      setFailure({ where, error });
      setStatus("");
    } finally {
      setBusy(false);
      refreshQuotas();
    }
  };

  const create = (e: React.FormEvent) => {
    e.preventDefault();
    const trimmed = name.trim();
    if (!trimmed) return;
    void run("create", async () => {
      const subject = await createSubject(trimmed);
      knownSubjects.remember(subject);
      if (!admin) setCreated((list) => [...list, subject]);
      setSelected(subject.id);
      setName("");
      return `Created ${subject.name} (${subject.id}). Add a face image next.`;
    });
  };

  const add = (e: React.FormEvent) => {
    e.preventDefault();
    if (!target || !image) return;
    const sent = image;
    void run("add", async () => {
      const added = await addFace(target.id, sent.blob, sent.filename);
      knownSubjects.patch(target.id, { faces: added.faces });
      if (!admin) setCreated((list) => list.map((s) => (s.id === target.id ? { ...s, faces: added.faces } : s)));
      // Only the image sent: one picked while it uploaded stays for the next face.
      setImage((shown) => (shown === sent ? undefined : shown));
      const quality = added.quality !== undefined ? ` (quality ${added.quality.toFixed(2)})` : "";
      return `Added face ${added.face_id}${quality} to ${target.name}: ${added.faces} face${added.faces === 1 ? "" : "s"} enrolled.`;
    });
  };

  const remove = (subject: Subject) =>
    void run("list", async () => {
      await deleteSubject(subject.id);
      knownSubjects.forget(subject.id);
      if (!admin) setCreated((list) => list.filter((s) => s.id !== subject.id));
      if (selected === subject.id) setSelected(undefined);
      return `Deleted ${subject.name}.`;
    });

  const unlock = (subject: Subject) =>
    void run("list", async () => {
      const released = await releaseLockout(subject.id);
      return released.wasLocked
        ? `Lifted the lockout of ${subject.name}${released.secondsLeft !== undefined ? ` (${released.secondsLeft} s were left)` : ""}; its failed attempts are forgotten.`
        : `${subject.name} was not locked; its failed attempts, if any, are forgotten.`;
    });

  return (
    <div className="view enrol">
      {TITLE}
      <div className="columns">
        <div className="stack">
          <form className="card controls" onSubmit={create}>
            <h3>New subject</h3>
            {quotas ? (
              <p
                className={nearlyFull(quotas.subjects) || nearlyFull(quotas.templates) ? "warn" : "muted"}
                data-testid="key-quotas"
              >
                This key: {describeQuotas(quotas)}.
              </p>
            ) : null}
            <div className="field">
              <label htmlFor={nameId}>Name</label>
              <div className="row">
                <input
                  id={nameId}
                  value={name}
                  onChange={(e) => setName(e.currentTarget.value)}
                  placeholder="e.g. Eileen Collins"
                  autoComplete="off"
                  maxLength={200}
                  data-testid="subject-name"
                />
                <button type="submit" disabled={busy || !name.trim()} data-testid="create-subject">
                  Create
                </button>
              </div>
            </div>
            <ErrorBox
              error={failure?.where === "create" ? failure.error : undefined}
              title="Cannot create the subject"
            />
          </form>
          <form className="card controls" onSubmit={add}>
            <h3>Add a face</h3>
            {!admin ? (
              <div className="field">
                <label htmlFor={targetId}>Subject id</label>
                <input
                  id={targetId}
                  value={selected ?? ""}
                  onChange={(e) => setSelected(e.currentTarget.value.trim() || undefined)}
                  placeholder="created below, or an existing subject's id"
                  autoComplete="off"
                  spellCheck={false}
                  data-testid="face-target-id"
                />
              </div>
            ) : null}
            {target ? (
              <p>
                To <strong data-testid="face-target">{target.name}</strong>
                {target.faces !== undefined ? ` (${target.faces} face${target.faces === 1 ? "" : "s"} so far)` : ""}
              </p>
            ) : (
              <p className="muted">
                {admin
                  ? "Select a subject in the list (or create one) first."
                  : "Create a subject or enter its id first."}
              </p>
            )}
            <ImagePicker onPick={setImage} selected={image?.filename} />
            {image ? <img className="preview" src={image.url} alt={`Face to add: ${image.filename}`} /> : null}
            <button type="submit" disabled={busy || !target || !image} data-testid="add-face">
              {busy ? "Working…" : "Add face"}
            </button>
            <ErrorBox error={failure?.where === "add" ? failure.error : undefined} title="Cannot add the face" />
          </form>
        </div>
        <SubjectsCard
          admin={admin}
          subjects={subjects}
          truncated={truncated}
          selected={selected}
          onSelect={setSelected}
          onDelete={remove}
          onUnlock={admin ? unlock : undefined}
          onReload={reload}
          busy={busy}
          status={status}
          error={failure?.where === "list" ? failure.error : undefined}
          listError={listError}
        />
      </div>
    </div>
  );
}

interface SubjectsCardProps {
  admin: boolean;
  /** Every subject (`admin`), or those created in this view; undefined while loading. */
  subjects: Subject[] | undefined;
  /** The listing stopped at `MAX_LISTED_SUBJECTS`: say so, and offer a lookup by id. */
  truncated?: boolean;
  selected: string | undefined;
  onSelect: (id: string) => void;
  onDelete: (subject: Subject) => void;
  onUnlock?: (subject: Subject) => void;
  onReload: () => void;
  busy: boolean;
  status: string;
  /** A delete or unlock that failed. */
  error: unknown;
  listError: unknown;
}

/**
 * The subjects: all of them for an `admin` key; for an `enrol` key, those created here, which
 * it may delete too (the runtime lets a key delete the subjects it created, so that whoever
 * enrolled a person can honour their erasure request; others' need `admin`).
 */
export function SubjectsCard({
  admin,
  subjects,
  truncated = false,
  selected,
  onSelect,
  onDelete,
  onUnlock,
  onReload,
  busy,
  status,
  error,
  listError,
}: SubjectsCardProps) {
  const { identity } = useAuth();
  return (
    <section className="card">
      <h3>
        {admin ? "Enrolled" : "Created here"}
        {admin ? (
          <button type="button" className="secondary small-button" onClick={onReload}>
            Reload
          </button>
        ) : null}
      </h3>
      <p className="status" role="status" data-testid="enrol-status">
        {status}
      </p>
      <ErrorBox error={error} />
      <ErrorBox error={listError} title="Cannot list subjects" />
      {admin ? <SubjectLookup truncated={truncated} onFound={(s) => onSelect(s.id)} disabled={busy} /> : null}
      {!admin ? <OwnSubjectsNotice identity={identity} /> : null}
      {!admin && subjects?.length === 0 ? null : subjects ? (
        <SubjectTable
          subjects={subjects}
          selected={selected}
          onSelect={onSelect}
          onDelete={onDelete}
          onUnlock={onUnlock}
          busy={busy}
        />
      ) : (
        <p className="placeholder">Loading…</p>
      )}
    </section>
  );
}

/** What an `enrol` key may do with subjects beyond creating them, and what needs `admin`. */
function OwnSubjectsNotice({ identity }: { identity: Identity | undefined }) {
  return (
    <>
      <ScopeNotice
        needs="admin"
        what="Listing and renaming subjects, or deleting those other keys created,"
        identity={identity}
        testId="subjects-need-admin"
      />
      <p className="muted small" data-testid="own-subjects">
        This key may delete the subjects it created; those created here have a Delete button.
      </p>
    </>
  );
}
