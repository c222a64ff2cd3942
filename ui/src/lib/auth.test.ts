import { describe, expect, it, vi } from "vitest";
import {
  KEY_STORAGE_NAME,
  type KeyStorage,
  KeySession,
  authHeaders,
  describeScopes,
  grantedScopes,
  hasScope,
  keyFromInput,
  mayBeKey,
  may,
  parseScopes,
  parseWhoami,
  parseQuotas,
  describeQuotas,
  nearlyFull,
  retryAfterSeconds,
  splitKeyFromHash,
} from "./auth";

const KEY = "fk_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde";

function memoryStorage(initial: Record<string, string> = {}): KeyStorage & { data: Record<string, string> } {
  const data = { ...initial };
  return {
    data,
    getItem: (k) => data[k] ?? null,
    setItem: (k, v) => {
      data[k] = v;
    },
    removeItem: (k) => {
      delete data[k];
    },
  };
}

function fakeLocation(hash: string, pathname = "/enrol", search = "") {
  const history = { state: { from: "test" }, replaceState: vi.fn() };
  return { location: { hash, pathname, search }, history };
}

describe("key format", () => {
  it("the prompt refuses only what cannot be a key: the runtime accepts any secret it has the hash of", () => {
    expect(KEY).toHaveLength(46);
    expect(mayBeKey(KEY)).toBe(true);
    expect(mayBeKey("a-secret-made-by-another-tool-1234")).toBe(true);
    expect(mayBeKey("not a key")).toBe(false);
    expect(mayBeKey("short")).toBe(false);
    expect(mayBeKey(`kiosk:verify:${"ab".repeat(32)}`)).toBe(false);
  });
});

describe("splitKeyFromHash", () => {
  it("takes the key out of a login URL's fragment", () => {
    expect(splitKeyFromHash(`#key=${KEY}`)).toEqual({ key: KEY, rest: "" });
  });

  it("keeps the other parts of the fragment", () => {
    expect(splitKeyFromHash(`#a=1&key=${KEY}&b`)).toEqual({ key: KEY, rest: "#a=1&b" });
    expect(splitKeyFromHash("#main")).toEqual({ key: undefined, rest: "#main" });
    expect(splitKeyFromHash("")).toEqual({ key: undefined, rest: "" });
  });

  it("URL-decodes the key and ignores an empty one", () => {
    expect(splitKeyFromHash("#key=fk_a%2Db").key).toBe("fk_a-b");
    expect(splitKeyFromHash("#key=")).toEqual({ key: undefined, rest: "" });
    expect(splitKeyFromHash("#key=%E0%A4%A").key).toBe("%E0%A4%A");
  });
});

describe("keyFromInput", () => {
  it("accepts the key, a login URL, or a Bearer header value", () => {
    expect(keyFromInput(`  ${KEY}\n`)).toBe(KEY);
    expect(keyFromInput(`http://127.0.0.1:8080/#key=${KEY}`)).toBe(KEY);
    expect(keyFromInput(`Bearer ${KEY}`)).toBe(KEY);
    expect(keyFromInput(`"${KEY}"`)).toBe(KEY);
  });
});

describe("authHeaders", () => {
  it("sends the key as a Bearer token, and nothing without a key", () => {
    expect(authHeaders(KEY)).toEqual({ Authorization: `Bearer ${KEY}` });
    expect(authHeaders(undefined)).toEqual({});
    expect(authHeaders("")).toEqual({});
  });
});

describe("scopes", () => {
  it("admin includes every other scope", () => {
    expect(hasScope(["admin"], "verify")).toBe(true);
    expect(hasScope(["admin"], "enrol")).toBe(true);
    expect(hasScope(["admin"], "metrics")).toBe(true);
    expect(hasScope(["verify"], "verify")).toBe(true);
    expect(hasScope(["verify"], "enrol")).toBe(false);
    expect(hasScope(["verify", "enrol"], "admin")).toBe(false);
    expect(grantedScopes(["admin"])).toEqual(["verify", "enrol", "admin", "metrics"]);
  });

  it("may: nothing without an identity, everything on an open runtime", () => {
    expect(may(undefined, "verify")).toBe(false);
    expect(may({ keyId: "", scopes: [], open: true }, "admin")).toBe(true);
    expect(may({ keyId: "kiosk", scopes: ["verify"] }, "verify")).toBe(true);
    expect(may({ keyId: "kiosk", scopes: ["verify"] }, "admin")).toBe(false);
  });

  it("keeps known scope names in a fixed order", () => {
    expect(parseScopes(["metrics", "verify", "root", 3, "verify"])).toEqual(["verify", "metrics"]);
    expect(parseScopes("admin")).toEqual([]);
  });

  it("says what the scopes allow in words", () => {
    expect(describeScopes(["verify"])).toBe("may verify faces");
    expect(describeScopes(["verify", "metrics"])).toBe("may verify faces and read metrics");
    expect(describeScopes(["admin"])).toBe(
      "may verify faces, enrol subjects and faces, list, change and delete subjects and see scores and read metrics",
    );
    expect(describeScopes([])).toBe("may do nothing");
  });
});

describe("parseWhoami", () => {
  it("reads key_id, scopes and rps", () => {
    expect(parseWhoami({ key_id: "admin", scopes: ["admin"], rps: null })).toEqual({
      keyId: "admin",
      scopes: ["admin"],
      rps: undefined,
    });
    expect(parseWhoami({ key_id: "kiosk", scopes: ["verify"], rps: 5 })).toEqual({
      keyId: "kiosk",
      scopes: ["verify"],
      rps: 5,
    });
    expect(parseWhoami(null)).toEqual({ keyId: "", scopes: [], rps: undefined });
  });

  it("reads the quotas, a null limit as none, and drops malformed ones", () => {
    const quotas = { subjects: { held: 3, limit: 10000 }, templates: { held: 4600, limit: null } };
    expect(parseWhoami({ key_id: "app", scopes: ["enrol"], quotas }).quotas).toEqual({
      subjects: { held: 3, limit: 10000 },
      templates: { held: 4600, limit: undefined },
    });
    expect(parseQuotas({ subjects: { held: 3 } })).toBeUndefined();
    expect(parseQuotas({ subjects: { held: "3" }, templates: { held: 1 } })).toBeUndefined();
    expect(parseWhoami({ key_id: "old", scopes: [] }).quotas).toBeUndefined();
  });
});

describe("describeQuotas", () => {
  it("says what the key holds of each quota", () => {
    expect(describeQuotas({ subjects: { held: 3, limit: 10000 }, templates: { held: 4600, limit: 5000 } })).toBe(
      "3 of 10,000 subjects created and 4,600 of 5,000 faces enrolled",
    );
    expect(describeQuotas({ subjects: { held: 12 }, templates: { held: 0 } })).toBe(
      "12 subjects created (no per-key limit) and 0 faces enrolled (no per-key limit)",
    );
    expect(describeQuotas({ subjects: { held: 1 }, templates: { held: 1, limit: 1 } })).toBe(
      "1 subject created (no per-key limit) and 1 of 1 face enrolled",
    );
    expect(nearlyFull({ held: 4500, limit: 5000 })).toBe(true);
    expect(nearlyFull({ held: 4499, limit: 5000 })).toBe(false);
    expect(nearlyFull({ held: 1e9 })).toBe(false);
  });
});

describe("retryAfterSeconds", () => {
  it("reads delta-seconds and HTTP dates", () => {
    expect(retryAfterSeconds("7")).toBe(7);
    expect(retryAfterSeconds(" 0 ")).toBe(0);
    const now = Date.parse("2026-12-03T10:00:00Z");
    expect(retryAfterSeconds("Thu, 03 Dec 2026 10:00:30 GMT", now)).toBe(30);
    expect(retryAfterSeconds("Thu, 03 Dec 2026 09:00:00 GMT", now)).toBe(0);
    expect(retryAfterSeconds("soon")).toBeUndefined();
    expect(retryAfterSeconds(null)).toBeUndefined();
  });
});

describe("KeySession", () => {
  it("starts from the stored key and keeps changes in storage", () => {
    const storage = memoryStorage({ [KEY_STORAGE_NAME]: KEY });
    const session = new KeySession(storage);
    expect(session.key()).toBe(KEY);
    const seen = vi.fn();
    const unsubscribe = session.subscribe(seen);
    session.clear("rejected");
    expect(session.snapshot()).toEqual({ key: undefined, notice: "rejected" });
    expect(storage.data).toEqual({});
    session.set("fk_other");
    expect(storage.data[KEY_STORAGE_NAME]).toBe("fk_other");
    expect(session.snapshot()).toEqual({ key: "fk_other" });
    expect(seen).toHaveBeenCalledTimes(2);
    unsubscribe();
    session.clear();
    expect(seen).toHaveBeenCalledTimes(2);
  });

  it("keeps the snapshot object until something changes", () => {
    const session = new KeySession(memoryStorage());
    expect(session.snapshot()).toBe(session.snapshot());
  });

  it("works in memory when storage fails", () => {
    const broken: KeyStorage = {
      getItem: () => {
        throw new Error("denied");
      },
      setItem: () => {
        throw new Error("quota");
      },
      removeItem: () => {
        throw new Error("denied");
      },
    };
    const session = new KeySession(broken);
    expect(session.key()).toBeUndefined();
    session.set(KEY);
    expect(session.key()).toBe(KEY);
    session.clear();
    expect(session.key()).toBeUndefined();
    expect(new KeySession(undefined).key()).toBeUndefined();
  });

  it("offers #key= from the address to a tab without a key, without signing in, and removes it from the address bar", () => {
    const storage = memoryStorage();
    const session = new KeySession(storage);
    const seen = vi.fn();
    session.subscribe(seen);
    const { location, history } = fakeLocation(`#key=${KEY}`, "/enrol", "?x=1");
    expect(session.adoptFromLocation(location, history)).toBe(true);
    // A link never signs the tab in by itself: the key is only offered, and nothing is stored.
    expect(session.key()).toBeUndefined();
    expect(session.snapshot()).toEqual({ offered: KEY });
    expect(storage.data).toEqual({});
    expect(seen).toHaveBeenCalledTimes(1);
    expect(history.replaceState).toHaveBeenCalledWith({ from: "test" }, "", "/enrol?x=1");
    // Signing in with it (the prompt's explicit click) uses and stores it; the offer is gone.
    session.set(KEY);
    expect(session.snapshot()).toEqual({ key: KEY });
    expect(storage.data[KEY_STORAGE_NAME]).toBe(KEY);
  });

  it("keeps a rejection notice beside an offer, and forgets the offer on sign out", () => {
    const session = new KeySession(memoryStorage());
    session.clear("rejected");
    const { location, history } = fakeLocation(`#key=${KEY}`);
    session.adoptFromLocation(location, history);
    expect(session.snapshot()).toEqual({ notice: "rejected", offered: KEY });
    session.clear();
    expect(session.snapshot()).toEqual({});
  });

  it("keeps the rest of the fragment and leaves an address without a key alone", () => {
    const session = new KeySession(memoryStorage());
    const withRest = fakeLocation(`#key=${KEY}&main`, "/");
    session.adoptFromLocation(withRest.location, withRest.history);
    expect(withRest.history.replaceState).toHaveBeenCalledWith({ from: "test" }, "", "/#main");

    const other = new KeySession(memoryStorage({ [KEY_STORAGE_NAME]: KEY }));
    const plain = fakeLocation("#main");
    expect(other.adoptFromLocation(plain.location, plain.history)).toBe(false);
    expect(plain.history.replaceState).not.toHaveBeenCalled();
    expect(other.key()).toBe(KEY);
  });

  it("never swaps a signed-in tab to a key a link offers, nor offers it", () => {
    const storage = memoryStorage({ [KEY_STORAGE_NAME]: KEY });
    const session = new KeySession(storage);
    const { location, history } = fakeLocation("#key=fk_someone_else", "/enrol");
    expect(session.adoptFromLocation(location, history)).toBe(false);
    expect(session.snapshot()).toEqual({ key: KEY });
    expect(storage.data[KEY_STORAGE_NAME]).toBe(KEY);
    // The offered key leaves the address all the same.
    expect(history.replaceState).toHaveBeenCalledWith({ from: "test" }, "", "/enrol");
    // Signed out, a link's key is offered, still not taken.
    session.clear();
    const after = fakeLocation("#key=fk_someone_else", "/");
    expect(session.adoptFromLocation(after.location, after.history)).toBe(true);
    expect(session.key()).toBeUndefined();
    expect(session.snapshot().offered).toBe("fk_someone_else");
    expect(storage.data).toEqual({});
  });

  it("removes an empty #key= from the address without forgetting the stored key", () => {
    const session = new KeySession(memoryStorage({ [KEY_STORAGE_NAME]: KEY }));
    const { location, history } = fakeLocation("#key=", "/");
    expect(session.adoptFromLocation(location, history)).toBe(false);
    expect(history.replaceState).toHaveBeenCalledWith({ from: "test" }, "", "/");
    expect(session.key()).toBe(KEY);
  });
});
