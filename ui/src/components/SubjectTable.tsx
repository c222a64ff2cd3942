import { useState } from "react";
import type { Subject } from "../api";
import { dateTime } from "../lib/format";

interface SubjectTableProps {
  subjects: Subject[];
  selected: string | undefined;
  onSelect: (id: string) => void;
  /** Absent when the key may not delete these subjects: no delete buttons. */
  onDelete?: (subject: Subject) => void;
  /** Lift the subject's lockout (an `admin` key); absent: no such button. */
  onUnlock?: (subject: Subject) => void;
  busy: boolean;
}

/**
 * Enrolled subjects with selection for adding faces and, with `onDelete`, a two-step delete
 * (and with `onUnlock`, lifting a lockout).
 */
export function SubjectTable({ subjects, selected, onSelect, onDelete, onUnlock, busy }: SubjectTableProps) {
  const [confirming, setConfirming] = useState<string>();
  if (subjects.length === 0) return <p className="placeholder">No subjects enrolled yet.</p>;
  return (
    <table className="subjects" data-testid="subjects">
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Id</th>
          <th scope="col" className="num">
            Faces
          </th>
          <th scope="col">Created</th>
          {onDelete ? (
            <th scope="col">
              <span className="sr-only">Actions</span>
            </th>
          ) : null}
        </tr>
      </thead>
      <tbody>
        {subjects.map((s) => (
          <tr
            key={s.id}
            className={s.id === selected ? "selected" : undefined}
            data-testid="subject-row"
            data-name={s.name}
          >
            <td>
              <button type="button" className="link" onClick={() => onSelect(s.id)} aria-pressed={s.id === selected}>
                {s.name}
              </button>
            </td>
            <td>
              <code className="id">{s.id}</code>
            </td>
            <td className="num" data-testid="subject-faces">
              {s.faces}
            </td>
            <td>
              {dateTime(s.created_at)}
              {s.created_by !== undefined ? (
                <div className="muted small" data-testid="subject-created-by">
                  by key <code>{s.created_by}</code>
                </div>
              ) : null}
            </td>
            {onDelete ? (
              <td className="actions">
                {confirming === s.id ? (
                  <>
                    <button
                      type="button"
                      className="danger"
                      disabled={busy}
                      onClick={() => {
                        setConfirming(undefined);
                        onDelete(s);
                      }}
                    >
                      Delete {s.name}
                    </button>
                    <button type="button" className="secondary" onClick={() => setConfirming(undefined)}>
                      Keep
                    </button>
                  </>
                ) : (
                  <>
                    {onUnlock ? (
                      <button
                        type="button"
                        className="secondary"
                        disabled={busy}
                        onClick={() => onUnlock(s)}
                        title="Lift a lockout after too many failed verifications"
                        aria-label={`Unlock ${s.name}`}
                        data-testid="subject-unlock"
                      >
                        Unlock
                      </button>
                    ) : null}
                    <button
                      type="button"
                      className="secondary"
                      disabled={busy}
                      onClick={() => setConfirming(s.id)}
                      aria-label={`Delete ${s.name}…`}
                      data-testid="subject-delete"
                    >
                      Delete…
                    </button>
                  </>
                )}
              </td>
            ) : null}
          </tr>
        ))}
      </tbody>
    </table>
  );
}
