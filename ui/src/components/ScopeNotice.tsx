import type { Identity, Scope } from "../lib/auth";
import { describeScopes } from "../lib/auth";

/**
 * Why part of a view is not available: the scope it needs, and what the signed-in key may do
 * instead.
 */
export function ScopeNotice({
  needs,
  what,
  identity,
  testId = "scope-notice",
}: {
  needs: Scope;
  what: string;
  identity: Identity | undefined;
  testId?: string;
}) {
  return (
    <div className="scope-notice" role="note" data-testid={testId} data-needs={needs}>
      <p>
        {what} needs an API key with the <code>{needs}</code> scope
        {needs === "admin" ? (
          ""
        ) : (
          <>
            {" "}
            (or <code>admin</code>)
          </>
        )}
        .
      </p>
      {identity && !identity.open ? (
        <p className="muted small">
          This key (<code>{identity.keyId}</code>) {describeScopes(identity.scopes)}.
        </p>
      ) : null}
    </div>
  );
}
