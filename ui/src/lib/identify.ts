/**
 * The identify view's form logic: the `limit` field (how many of the nearest subjects the runtime
 * judges) read from its text box within the contract's bounds.
 */

import { IDENTIFY_LIMIT } from "../api";

/** The `limit` to send (undefined: the runtime's default), or why the text is not one. */
export type LimitInput = { ok: true; limit: number | undefined } | { ok: false; problem: string };

/** Read the limit box: empty leaves the runtime's default; otherwise a whole number from 1 to 100. */
export function readLimit(text: string): LimitInput {
  const t = text.trim();
  if (t === "") return { ok: true, limit: undefined };
  const n = Number(t);
  if (!/^\d+$/.test(t) || n < IDENTIFY_LIMIT.min || n > IDENTIFY_LIMIT.max) {
    return { ok: false, problem: `limit is a whole number from ${IDENTIFY_LIMIT.min} to ${IDENTIFY_LIMIT.max}` };
  }
  return { ok: true, limit: n };
}
