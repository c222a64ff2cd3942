import { useEffect, useId, useRef, useState } from "react";
import { type Subject, getSubject } from "../api";
import { TRUNCATED_NOTICE, knownSubjects, lookupMiss, readSubjectId } from "../lib/subjects";
import { ErrorBox } from "./ErrorBox";

interface SubjectLookupProps {
  /** The listing was cut off: say so and offer the lookup; otherwise render nothing. */
  truncated: boolean;
  /** A subject was found (and remembered, so the pickers offer it): select it. */
  onFound: (subject: Subject) => void;
  disabled?: boolean;
}

/**
 * Beside a cut-off subject list: says that only the oldest subjects are listed, and finds any
 * other by its id (`GET /v1/subjects/{id}`). A found subject is remembered for this tab
 * (`knownSubjects`), so every picker offers it from then on. Not a form of its own, as it sits
 * inside other forms: Enter in the field looks up rather than submits the form around it.
 */
export function SubjectLookup({ truncated, onFound, disabled = false }: SubjectLookupProps) {
  const [text, setText] = useState("");
  const [tried, setTried] = useState(false);
  const [busy, setBusy] = useState(false);
  const [miss, setMiss] = useState<string>();
  const [status, setStatus] = useState("");
  const [error, setError] = useState<unknown>();
  const inFlight = useRef<AbortController>(undefined);
  const inputId = useId();
  const helpId = useId();
  useEffect(() => () => inFlight.current?.abort(), []);
  if (!truncated) return null;

  const input = readSubjectId(text);
  const problem = tried && !input.ok ? input.problem : miss;

  const find = async () => {
    setTried(true);
    setMiss(undefined);
    setStatus("");
    setError(undefined);
    if (!input.ok) return;
    inFlight.current?.abort();
    const controller = new AbortController();
    inFlight.current = controller;
    setBusy(true);
    try {
      const subject = await getSubject(input.id, controller.signal);
      knownSubjects.remember(subject);
      onFound(subject);
      setStatus(`Found ${subject.name} (${subject.id}): selected.`);
      setText("");
      setTried(false);
    } catch (e) {
      if (controller.signal.aborted) return;
      const notThere = lookupMiss(e, input.id);
      if (notThere) setMiss(notThere);
      else setError(e);
    } finally {
      if (!controller.signal.aborted) setBusy(false);
    }
  };

  return (
    <div className="field subject-lookup" data-testid="subject-lookup">
      <p className="warn small" role="status" data-testid="subjects-truncated">
        {TRUNCATED_NOTICE}
      </p>
      <label htmlFor={inputId}>Subject id (to pick one not listed)</label>
      <div className="row">
        <input
          id={inputId}
          value={text}
          onChange={(e) => {
            setText(e.currentTarget.value);
            setTried(false);
            setMiss(undefined);
          }}
          onKeyDown={(e) => {
            if (e.key !== "Enter") return;
            e.preventDefault();
            if (!busy) void find();
          }}
          placeholder="e.g. 3f0c2a1e-8b4d-4c1a-9e2f-5a6b7c8d9e0f"
          autoComplete="off"
          spellCheck={false}
          disabled={disabled}
          aria-describedby={helpId}
          aria-invalid={problem ? true : undefined}
          data-testid="subject-lookup-id"
        />
        <button
          type="button"
          className="secondary"
          onClick={() => void find()}
          disabled={disabled || busy || !text.trim()}
          data-testid="subject-lookup-submit"
        >
          {busy ? "Finding…" : "Find"}
        </button>
      </div>
      <p
        id={helpId}
        className={problem ? "fail-text small" : "muted small"}
        aria-live="polite"
        data-testid="subject-lookup-help"
      >
        {problem ?? "Found subjects join the list, first, and stay there while this tab keeps its key."}
      </p>
      <p className="status" role="status" data-testid="subject-lookup-status">
        {status}
      </p>
      <ErrorBox error={error} title="Cannot look the subject up" />
    </div>
  );
}
