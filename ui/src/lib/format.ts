/** Number and time formatting shared by the views. */

const DASH = "–";

/** Fixed decimals, with a dash for missing or non-finite values and no "-0". */
export function fixed(value: number | undefined | null, digits = 2): string {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  const text = value.toFixed(digits);
  return /^-0(\.0+)?$/.test(text) ? text.slice(1) : text;
}

/** A signed value for layer displays: `+0.80`, `-1.20`, `0.00`. */
export function signed(value: number | undefined, digits = 2): string {
  const text = fixed(value, digits);
  if (text === DASH || value === undefined) return text;
  return Number(text) > 0 ? `+${text}` : text;
}

/** A 0..1 value as a percentage: `76.9 %`. */
export function percent(value: number | undefined | null, digits = 1): string {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  return `${fixed(value * 100, digits)} %`;
}

/** A duration in milliseconds with a unit that keeps 2-3 significant digits. */
export function millis(ms: number | undefined | null): string {
  if (ms === undefined || ms === null || !Number.isFinite(ms)) return DASH;
  if (ms === 0) return "0 ms";
  const abs = Math.abs(ms);
  if (abs < 1) return `${fixed(ms * 1000, abs < 0.01 ? 1 : 0)} µs`;
  if (abs < 10) return `${fixed(ms, 2)} ms`;
  if (abs < 100) return `${fixed(ms, 1)} ms`;
  if (abs < 1000) return `${fixed(ms, 0)} ms`;
  if (abs < 10_000) return `${fixed(ms / 1000, 2)} s`;
  return `${fixed(ms / 1000, 1)} s`;
}

/** A duration in seconds, shown like [`millis`]. */
export const seconds = (s: number | undefined | null): string =>
  s === undefined || s === null ? DASH : millis(s * 1000);

/** A per-second rate: `0.40/s`, `12/s`. */
export function rate(perSecond: number | undefined): string {
  if (perSecond === undefined || !Number.isFinite(perSecond)) return DASH;
  return `${fixed(perSecond, perSecond >= 10 ? 0 : 2)}/s`;
}

/** An integer count with thousands separators. */
export function count(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  return Math.round(value).toLocaleString("en-US");
}

/** An ISO timestamp as `YYYY-MM-DD HH:MM` in local time; the input itself if unparsable. */
export function dateTime(iso: string | undefined): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
