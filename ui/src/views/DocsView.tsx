import { createContext, useContext, useEffect, useState } from "react";
import { apiUrl, openApi } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { Inline, Prose } from "../components/Prose";
import { type ApiDoc, type Content, type Operation, typeRuns } from "../lib/openapi";

const SchemaNames = createContext<ReadonlySet<string>>(new Set());

function openSchema(name: string) {
  const el = document.getElementById(`schema-${name}`);
  if (el instanceof HTMLDetailsElement) el.open = true;
  el?.scrollIntoView({ block: "center" });
  el?.querySelector("summary")?.focus();
}

/** A type string with every known schema name linked to its definition. */
function Type({ text }: { text: string }) {
  const names = useContext(SchemaNames);
  return (
    <code className="type">
      {typeRuns(text, names).map((run, i) =>
        run.schema ? (
          <a
            key={i}
            href={`#schema-${run.schema}`}
            onClick={(e) => {
              e.preventDefault();
              openSchema(run.schema ?? "");
            }}
          >
            {run.text}
          </a>
        ) : (
          <span key={i}>{run.text}</span>
        ),
      )}
    </code>
  );
}

function Contents({ contents }: { contents: Content[] }) {
  return (
    <>
      {contents.map((c) => (
        <div key={c.mediaType} className="content-type">
          <span className="muted small">{c.mediaType}</span> <Type text={c.type} />
        </div>
      ))}
    </>
  );
}

function OperationDoc({ op }: { op: Operation }) {
  return (
    <details className="op" data-testid="operation" data-path={op.path} data-method={op.method}>
      <summary>
        <span className={`method method-${op.method.toLowerCase()}`}>{op.method}</span>
        <code className="path">{op.path}</code>
        <span className="op-summary">
          <Inline text={op.summary} />
        </span>
      </summary>
      <div className="op-body">
        <Prose text={op.description} />
        {op.parameters.length > 0 ? (
          <>
            <h4>Parameters</h4>
            <table>
              <tbody>
                {op.parameters.map((p) => (
                  <tr key={`${p.in}-${p.name}`}>
                    <th scope="row">
                      <code>{p.name}</code>
                      {p.required ? "" : "?"}
                    </th>
                    <td className="muted small">{p.in}</td>
                    <td>
                      <Type text={p.type} />
                    </td>
                    <td>
                      <Inline text={p.description} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        ) : null}
        {op.requestBody ? (
          <>
            <h4>Request body{op.requestBody.required ? "" : " (optional)"}</h4>
            <Contents contents={op.requestBody.contents} />
          </>
        ) : null}
        <h4>Responses</h4>
        <table>
          <tbody>
            {op.responses.map((r) => (
              <tr key={r.status}>
                <th scope="row" className={`resp-status resp-status-${r.status[0] ?? "x"}`}>
                  {r.status}
                </th>
                <td>
                  <Inline text={r.description} />
                </td>
                <td>
                  <Contents contents={r.contents} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </details>
  );
}

/** The runtime's API reference, rendered from its own `/openapi.json`. */
export function DocsView() {
  const [doc, setDoc] = useState<ApiDoc>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    const controller = new AbortController();
    openApi(controller.signal)
      .then(setDoc)
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      });
    return () => controller.abort();
  }, []);

  const tags = doc ? [...new Set(doc.operations.map((o) => o.tag))] : [];
  const names = new Set(doc?.schemas.map((s) => s.name));
  return (
    <SchemaNames.Provider value={names}>
      <div className="view docs">
        <h2>
          {doc?.title || "API docs"} {doc?.version ? <span className="muted small">v{doc.version}</span> : null}
        </h2>
        {doc ? <Prose className="lead" text={doc.description} /> : null}
        <p className="small">
          Machine-readable: <a href={apiUrl("/openapi.json")}>openapi.json</a> (OpenAPI 3).
        </p>
        <ErrorBox error={error} title="Cannot load openapi.json" />
        {tags.map((tag) => (
          <section key={tag} className="card tag">
            <h3>{tag}</h3>
            {doc?.operations
              .filter((o) => o.tag === tag)
              .map((op) => (
                <OperationDoc key={`${op.method} ${op.path}`} op={op} />
              ))}
          </section>
        ))}
        {doc && doc.schemas.length > 0 ? (
          <section className="card">
            <h3>Schemas</h3>
            {doc.schemas.map((s) => (
              <details key={s.name} className="op" id={`schema-${s.name}`}>
                <summary>
                  <code className="path">{s.name}</code>
                  <span className="op-summary">
                    <Inline text={s.description} />
                  </span>
                </summary>
                <div className="op-body">
                  {s.fields.length > 0 ? (
                    <table>
                      <tbody>
                        {s.fields.map((f) => (
                          <tr key={f.name}>
                            <th scope="row">
                              <code>{f.name}</code>
                              {f.required ? "" : "?"}
                            </th>
                            <td>
                              <Type text={f.type} />
                            </td>
                            <td>
                              <Inline text={f.description} />
                            </td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  ) : (
                    <Type text={s.type} />
                  )}
                </div>
              </details>
            ))}
          </section>
        ) : null}
      </div>
    </SchemaNames.Provider>
  );
}
