import { renderToStaticMarkup } from "react-dom/server";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Main } from "./App";
import { KEY_REJECTED } from "./api";
import { type Auth, checkKey, showsKeys } from "./hooks/useAuth";
import { keySession } from "./lib/auth";

const KEY = "fk_" + "c".repeat(43);
const answer = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const testIds = (html: string) => new Set([...html.matchAll(/data-testid="([^"]+)"/g)].map((m) => m[1]));
const auth = (state: Auth["state"]): Auth => ({ state, signIn: () => undefined, signOut: () => undefined });
const sentKey = (fetchMock: ReturnType<typeof vi.fn>, call = 0) =>
  new Headers((fetchMock.mock.calls[call] as unknown as [string, RequestInit])[1].headers).get("Authorization");

describe("checking the key", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    keySession.clear();
  });

  it("asks nothing without a key once the runtime is known to have keys: it would only refuse (and audit) it", async () => {
    const fetchMock = vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "no key" } }));
    vi.stubGlobal("fetch", fetchMock);
    expect(await checkKey({}, new AbortController().signal)).toEqual({ status: "signed-out" });
    expect(await checkKey({ notice: KEY_REJECTED }, new AbortController().signal)).toEqual({ status: "signed-out" });
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("asks without a key only to tell a runtime without keys (404: open) from one with them", async () => {
    const signal = new AbortController().signal;
    const refuses = vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "no key" } }));
    vi.stubGlobal("fetch", refuses);
    const refused = await checkKey({}, signal, true);
    expect(refused).toEqual({ status: "signed-out" });
    expect(sentKey(refuses)).toBeNull();
    expect(showsKeys(refused)).toBe(true);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(404, { error: { code: "not_found", message: "no route" } })),
    );
    const open = await checkKey({}, signal, true);
    expect(open).toMatchObject({ status: "signed-in", identity: { open: true } });
    expect(showsKeys(open)).toBe(false);
    expect(showsKeys({ status: "signed-in", identity: { keyId: "admin", scopes: ["admin"] } })).toBe(true);
    expect(showsKeys({ status: "unavailable", error: new Error("down") })).toBe(false);
  });

  it("asks who a key a link offers is, with that key, and neither signs in with it nor drops it", async () => {
    const fetchMock = vi.fn(async () => answer(200, { key_id: "someone", scopes: ["enrol"], rps: null }));
    vi.stubGlobal("fetch", fetchMock);
    const state = await checkKey({ offered: KEY }, new AbortController().signal);
    expect(state).toEqual({
      status: "signed-out",
      offered: { key: KEY, identity: { keyId: "someone", scopes: ["enrol"], rps: undefined, quotas: undefined } },
    });
    expect(sentKey(fetchMock)).toBe(`Bearer ${KEY}`);
    expect(keySession.key()).toBeUndefined();

    // A key the runtime refuses is still offered, without an id, and sets no rejection notice.
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "unknown API key" } })),
    );
    expect(await checkKey({ offered: KEY }, new AbortController().signal)).toEqual({
      status: "signed-out",
      offered: { key: KEY },
    });
    expect(keySession.snapshot().notice).toBeUndefined();
  });

  it("checks the tab's own key: signed in, refused, or the runtime unavailable", async () => {
    keySession.set(KEY);
    const fetchMock = vi.fn(async () => answer(200, { key_id: "admin", scopes: ["admin"] }));
    vi.stubGlobal("fetch", fetchMock);
    const signal = new AbortController().signal;
    expect(await checkKey({ key: KEY }, signal)).toMatchObject({ status: "signed-in", identity: { keyId: "admin" } });
    expect(sentKey(fetchMock)).toBe(`Bearer ${KEY}`);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(503, { error: { code: "overloaded", message: "busy" } })),
    );
    expect(await checkKey({ key: KEY }, signal)).toMatchObject({ status: "unavailable" });
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "unknown API key" } })),
    );
    expect(await checkKey({ key: KEY }, signal)).toEqual({ status: "signed-out" });
    expect(keySession.snapshot()).toEqual({ key: undefined, notice: KEY_REJECTED });
  });
});

describe("the key prompt with a key from a link", () => {
  it("is filled in with it and says plainly where it came from, and to sign in only if expected", () => {
    const html = renderToStaticMarkup(
      <Main
        route="enrol"
        auth={auth({
          status: "signed-out",
          offered: { key: KEY, identity: { keyId: "someone", scopes: ["enrol"] } },
        })}
      />,
    );
    const ids = testIds(html);
    expect(ids.has("key-prompt")).toBe(true);
    expect(ids.has("key-offered")).toBe(true);
    expect(ids.has("key-submit")).toBe(true);
    expect(ids.has("key-offered-dismiss")).toBe(true);
    // Not signed in: the view is not there until the user signs in.
    expect(ids.has("create-subject")).toBe(false);
    expect(html).toContain(`data-testid="key-input" value="${KEY}"`);
    expect(html).toContain('<button type="submit" data-testid="key-submit">Sign in</button>');
    expect(html).toContain("came from the link you opened");
    expect(html).toContain("Sign in with it only if you expected it");
    expect(html).toContain('data-testid="key-offered-id">someone</code>, which may enrol subjects and faces');
  });

  it("without an offer, the field is empty and there is no such warning", () => {
    const html = renderToStaticMarkup(<Main route="enrol" auth={auth({ status: "signed-out" })} />);
    expect(testIds(html).has("key-offered")).toBe(false);
    expect(html).toContain('data-testid="key-input" value=""');
  });

  it("without the key's id (the runtime would not say), still warns", () => {
    const html = renderToStaticMarkup(
      <Main route="verify" auth={auth({ status: "signed-out", offered: { key: KEY } })} />,
    );
    expect(testIds(html).has("key-offered")).toBe(true);
    expect(testIds(html).has("key-offered-id")).toBe(false);
    expect(html).toContain(`value="${KEY}"`);
  });
});
