/**
 * The subjects the pickers offer beyond what `GET /v1/subjects` lists. The UI lists at most
 * `MAX_LISTED_SUBJECTS` (the oldest); past that, a subject is reached by its id, and the
 * subjects created or looked up in this tab are remembered so that every picker offers them.
 */

import { ApiError, MAX_LISTED_SUBJECTS, type Subject, parseSubjectId } from "../api";
import { keySession } from "./auth";
import { count } from "./format";

/** Where the key comes from, to forget the remembered subjects when it changes. */
export interface KeySource {
  key: () => string | undefined;
  subscribe: (listener: () => void) => () => void;
}

/**
 * The subjects this tab created or looked up by id, newest first, with change notification for
 * React (`useSyncExternalStore`). In memory only; forgotten when the key changes (sign out,
 * another key), as another key may not see them.
 */
export class KnownSubjects {
  private list: readonly Subject[] = [];
  private readonly listeners = new Set<() => void>();

  constructor(session?: KeySource) {
    if (!session) return;
    let key = session.key();
    session.subscribe(() => {
      const now = session.key();
      if (now !== key) this.update([]);
      key = now;
    });
  }

  /** The subjects; the same array until it changes. */
  readonly snapshot = (): readonly Subject[] => this.list;

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Remember `subject` (created or found), first; an older copy of it is replaced. */
  remember(subject: Subject): void {
    this.update([subject, ...this.list.filter((s) => s.id !== subject.id)]);
  }

  /** Update a remembered subject in place (e.g. its face count after an enrolment). */
  patch(id: string, change: Partial<Omit<Subject, "id">>): void {
    if (!this.list.some((s) => s.id === id)) return;
    this.update(this.list.map((s) => (s.id === id ? { ...s, ...change } : s)));
  }

  /** Forget a subject (deleted). */
  forget(id: string): void {
    if (!this.list.some((s) => s.id === id)) return;
    this.update(this.list.filter((s) => s.id !== id));
  }

  private update(list: readonly Subject[]): void {
    if (list.length === 0 && this.list.length === 0) return;
    this.list = list;
    for (const listener of [...this.listeners]) listener();
  }
}

/** This tab's remembered subjects, forgotten with its key. */
export const knownSubjects = new KnownSubjects(keySession);

/**
 * The subjects to offer: the listed ones and, when the listing was cut off, the remembered ones
 * it left out, first (those are the ones the user created or looked up). A complete listing is
 * the truth: a remembered subject missing from it has been deleted. Undefined while loading.
 */
export function offeredSubjects(
  listed: Subject[] | undefined,
  truncated: boolean,
  known: readonly Subject[],
): Subject[] | undefined {
  if (!listed) return undefined;
  if (!truncated) return listed;
  const ids = new Set(listed.map((s) => s.id));
  return [...known.filter((s) => !ids.has(s.id)), ...listed];
}

/** What a cut-off listing says: how many are shown, and how to reach the others. */
export const TRUNCATED_NOTICE = `Showing the first ${count(MAX_LISTED_SUBJECTS)} subjects (the oldest) of more: to pick a subject that is not listed, enter its id.`;

/** A typed id to look up: the canonical id, or what is wrong with the text. */
export type SubjectIdInput = { ok: true; id: string } | { ok: false; problem: string };

/** Read a subject id typed into a lookup field. */
export function readSubjectId(text: string): SubjectIdInput {
  if (!text.trim()) return { ok: false, problem: "Enter the subject's id." };
  const id = parseSubjectId(text);
  return id
    ? { ok: true, id }
    : {
        ok: false,
        problem: "A subject id is a UUID such as 3f0c2a1e-8b4d-4c1a-9e2f-5a6b7c8d9e0f (enrolment gives it).",
      };
}

/** Why a lookup by id failed, in words, when it is simply not there; undefined otherwise. */
export function lookupMiss(error: unknown, id: string): string | undefined {
  return error instanceof ApiError && error.status === 404 ? `No subject has the id ${id}.` : undefined;
}
