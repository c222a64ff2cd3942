import { codeSpans } from "../lib/openapi";

/** Text with `backtick` spans shown as code. */
export function Prose({ text, className }: { text: string; className?: string }) {
  if (!text) return null;
  return (
    <p className={className}>
      {codeSpans(text).map((run, i) => (run.code ? <code key={i}>{run.text}</code> : <span key={i}>{run.text}</span>))}
    </p>
  );
}
