/** SVG path data for a small line chart of `values` in a `width` x `height` box (y grows down). */
export function sparkPath(values: readonly number[], width: number, height: number, pad = 1): string {
  const finite = values.map((v) => (Number.isFinite(v) ? v : 0));
  if (finite.length === 0) return "";
  const max = Math.max(...finite, 0);
  const min = Math.min(...finite, 0);
  const span = max - min || 1;
  const stepX = finite.length > 1 ? (width - 2 * pad) / (finite.length - 1) : 0;
  const y = (v: number) => height - pad - ((v - min) / span) * (height - 2 * pad);
  return finite.map((v, i) => `${i === 0 ? "M" : "L"}${(pad + i * stepX).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
}

/** Append `value`, keeping at most `limit` most recent entries. */
export function pushBounded<T>(list: readonly T[], value: T, limit: number): T[] {
  const next = [...list, value];
  return next.length > limit ? next.slice(next.length - limit) : next;
}
