import { useId, useState } from "react";
import type { OfferedKey } from "../hooks/useAuth";
import { describeScopes, keyFromInput, mayBeKey } from "../lib/auth";

/**
 * Asks for an API key when the page has none (or the runtime rejected it), and says where keys
 * come from. The key is kept in this tab only. A key a `#key=` link `offered` fills the field,
 * with a warning that it came from the link: it is used only once the user signs in with it
 * (`onDismiss` forgets it).
 */
export function KeyPrompt({
  notice,
  offered,
  onKey,
  onDismiss,
}: {
  notice?: string;
  offered?: OfferedKey;
  onKey: (key: string) => void;
  onDismiss?: () => void;
}) {
  const [input, setInput] = useState(offered?.key ?? "");
  const [problem, setProblem] = useState<string>();
  const inputId = useId();
  const hintId = useId();

  const submit = (e: React.FormEvent) => {
    e.preventDefault();
    const key = keyFromInput(input);
    if (!mayBeKey(key)) {
      setProblem(
        "That is not an API key: a key is one word of at least 16 characters (those new-api-key makes are fk_ followed by 43 letters, digits, - or _); a line of the keys file holds the key's hash, not the key.",
      );
      return;
    }
    setProblem(undefined);
    setInput("");
    onKey(key);
  };

  return (
    <div className="view key-prompt" data-testid="key-prompt">
      <h2>Sign in with an API key</h2>
      <p className="lead">
        This runtime answers only requests that carry an API key. Paste one to use the UI; its scopes decide which views
        work.
      </p>
      {notice ? (
        <div className="error" role="alert" data-testid="key-notice">
          <p>{notice}</p>
        </div>
      ) : null}
      {offered ? <OfferedNotice offered={offered} onDismiss={onDismiss} /> : null}
      <div className="columns">
        <form className="card controls" onSubmit={submit}>
          <div className="field">
            <label htmlFor={inputId}>API key</label>
            <input
              id={inputId}
              type="password"
              value={input}
              onChange={(e) => setInput(e.currentTarget.value)}
              placeholder="fk_…"
              autoComplete="off"
              spellCheck={false}
              aria-describedby={hintId}
              aria-invalid={problem ? true : undefined}
              data-testid="key-input"
            />
            <p id={hintId} className="muted small">
              The key, or the whole login URL. It is kept in this browser tab only (session storage) and sent as{" "}
              <code>Authorization: Bearer …</code>; sign out forgets it.
            </p>
          </div>
          {problem ? (
            <p className="key-problem" role="alert" data-testid="key-problem">
              {problem}
            </p>
          ) : null}
          <button type="submit" disabled={!input.trim()} data-testid="key-submit">
            Sign in
          </button>
        </form>
        <section className="card">
          <h3>Where keys come from</h3>
          <ul className="key-sources">
            <li>
              <strong>First start.</strong> Without a keys file the runtime creates an admin key and prints a one-time
              login URL in its start-up log, <code>http://&lt;host&gt;:&lt;port&gt;/#key=fk_…</code>. Open it and sign
              in, or paste it here.
            </li>
            <li>
              <strong>A new key.</strong> <code>facekey-runtime new-api-key &lt;key-id&gt; --scopes verify,enrol</code>{" "}
              prints the key once and the line for the runtime&apos;s API keys file.
            </li>
            <li>
              <strong>On Kubernetes.</strong> The operator keeps the keys in the <code>&lt;name&gt;-api-keys</code>{" "}
              Secret of the FaceKeyDeployment; ask whoever runs it.
            </li>
          </ul>
          <p className="muted small">
            Scopes: <code>verify</code> (verify faces), <code>enrol</code> (enrol subjects and faces),{" "}
            <code>admin</code> (everything, including listing and deleting subjects and seeing scores),{" "}
            <code>metrics</code> (read metrics when they are keyed).
          </p>
        </section>
      </div>
    </div>
  );
}

/** Says that the key in the field came from the link, and to sign in only if that was expected. */
function OfferedNotice({ offered, onDismiss }: { offered: OfferedKey; onDismiss?: () => void }) {
  const who = offered.identity && !offered.identity.open ? offered.identity : undefined;
  return (
    <div className="scope-notice key-offered" role="alert" data-testid="key-offered">
      <p>
        <strong>The key below came from the link you opened</strong>
        {who ? (
          <>
            {" "}
            (key <code data-testid="key-offered-id">{who.keyId}</code>, which {describeScopes(who.scopes)})
          </>
        ) : null}
        ; you are not signed in with it yet.
      </p>
      <p>
        Sign in with it only if you expected it, such as the login URL your runtime printed. A link from someone else
        would have you work under their key: whatever you enrol would be theirs.
      </p>
      {onDismiss ? (
        <button type="button" className="secondary small-button" onClick={onDismiss} data-testid="key-offered-dismiss">
          Not mine: forget it
        </button>
      ) : null}
    </div>
  );
}
