import { codeSpans } from "../lib/openapi";

/** Text with `backtick` spans shown as code, as inline content. */
export function Inline({ text }: { text: string }) {
  return (
    <>
      {codeSpans(text).map((run, i) => (run.code ? <code key={i}>{run.text}</code> : <span key={i}>{run.text}</span>))}
    </>
  );
}

/** A paragraph of text with `backtick` spans shown as code; nothing for empty text. */
export function Prose({ text, className }: { text: string; className?: string }) {
  if (!text) return null;
  return (
    <p className={className}>
      <Inline text={text} />
    </p>
  );
}
