/**
 * API keys in the browser, in one place: the key from the runtime's one-time login URL
 * (`/#key=fk_…`), where it is kept (this tab's `sessionStorage`), the `Authorization` header
 * every API call sends, and what a key's scopes allow, in plain words.
 */

/** What an API key may do; `admin` includes every other scope. */
export const SCOPES = ["verify", "enrol", "admin", "metrics"] as const;
export type Scope = (typeof SCOPES)[number];

/** Plain words for each scope, as the header and the notices say them. */
export const SCOPE_WORDS: Record<Scope, string> = {
  verify: "verify faces",
  enrol: "enrol subjects and faces",
  admin: "list, change and delete subjects and see scores",
  metrics: "read metrics",
};

/** Who the runtime says the key is: `GET /v1/auth/whoami`. */
export interface Identity {
  /** The key's id from the runtime's keys file (never the key itself). */
  keyId: string;
  scopes: Scope[];
  /** The key's request rate limit, requests per second; undefined when unlimited. */
  rps?: number;
  /** True when the runtime has no API keys at all (an older runtime): everything is allowed. */
  open?: boolean;
  /** What the key holds against its store quotas; undefined from a runtime without them. */
  quotas?: KeyQuotas;
}

/** How much of one per-key quota a key holds; `limit` undefined: no per-key limit. */
export interface QuotaUse {
  held: number;
  limit?: number;
}

/** A key's per-key store quotas: subjects it created, faces (templates) it enrolled. */
export interface KeyQuotas {
  subjects: QuotaUse;
  templates: QuotaUse;
}

function parseQuotaUse(raw: unknown): QuotaUse | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const o = raw as Record<string, unknown>;
  if (typeof o.held !== "number" || !Number.isFinite(o.held)) return undefined;
  const limit = typeof o.limit === "number" && Number.isFinite(o.limit) ? o.limit : undefined;
  return { held: o.held, limit };
}

/** The `quotas` of a whoami answer, or undefined when absent or malformed. */
export function parseQuotas(raw: unknown): KeyQuotas | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const o = raw as Record<string, unknown>;
  const subjects = parseQuotaUse(o.subjects);
  const templates = parseQuotaUse(o.templates);
  return subjects && templates ? { subjects, templates } : undefined;
}

function quotaPart(use: QuotaUse, [one, many]: [string, string]): string {
  const held = use.held.toLocaleString("en-US");
  if (use.limit === undefined) return `${held} ${use.held === 1 ? one : many} (no per-key limit)`;
  return `${held} of ${use.limit.toLocaleString("en-US")} ${use.limit === 1 ? one : many}`;
}

/** The quotas in words: "3 of 10,000 subjects created and 2 of 5,000 faces enrolled". */
export function describeQuotas(q: KeyQuotas): string {
  const subjects = quotaPart(q.subjects, ["subject created", "subjects created"]);
  return `${subjects} and ${quotaPart(q.templates, ["face enrolled", "faces enrolled"])}`;
}

/** Whether a quota is at least 90 % used (the operator's alert threshold). */
export const nearlyFull = (use: QuotaUse): boolean => use.limit !== undefined && use.held >= 0.9 * use.limit;

/** The `sessionStorage` entry holding the key. */
export const KEY_STORAGE_NAME = "facekey.api_key";

/**
 * Whether `s` may be an API key at all: the runtime accepts any secret whose SHA-256 is in its
 * keys file (not only the `fk_` keys `new-api-key` makes), so only what cannot be one is
 * refused before asking it: empty or short input, or one with spaces or colons (a pasted line
 * of the keys file, which holds the hash, not the key).
 */
export const mayBeKey = (s: string): boolean => s.length >= 16 && !/[\s:]/.test(s);

/** The scope names among `v`, in [`SCOPES`] order, without duplicates or unknown names. */
export function parseScopes(v: unknown): Scope[] {
  const list = Array.isArray(v) ? v : [];
  return SCOPES.filter((s) => list.includes(s));
}

/** Whether `scopes` grant `scope`, directly or through `admin`. */
export const hasScope = (scopes: readonly Scope[], scope: Scope): boolean =>
  scopes.includes(scope) || scopes.includes("admin");

/** Whether an identity (or none: not signed in) grants `scope`. */
export const may = (identity: Identity | undefined, scope: Scope): boolean =>
  identity !== undefined && (identity.open === true || hasScope(identity.scopes, scope));

/** Every scope the given ones grant, `admin` expanded. */
export const grantedScopes = (scopes: readonly Scope[]): Scope[] => SCOPES.filter((s) => hasScope(scopes, s));

/** What the scopes allow, in words: "may verify faces and read metrics". */
export function describeScopes(scopes: readonly Scope[]): string {
  const words = grantedScopes(scopes).map((s) => SCOPE_WORDS[s]);
  if (words.length === 0) return "may do nothing";
  if (words.length === 1) return `may ${words[0]}`;
  return `may ${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
}

/** Normalise a `GET /v1/auth/whoami` answer `{"key_id","scopes","rps","quotas"}`. */
export function parseWhoami(raw: unknown): Identity {
  const o = typeof raw === "object" && raw !== null ? (raw as Record<string, unknown>) : {};
  const rps = typeof o.rps === "number" && Number.isFinite(o.rps) ? o.rps : undefined;
  return {
    keyId: typeof o.key_id === "string" ? o.key_id : "",
    scopes: parseScopes(o.scopes),
    rps,
    quotas: parseQuotas(o.quotas),
  };
}

/** The headers that authenticate a request with `key` (none without a key). */
export function authHeaders(key: string | undefined): Record<string, string> {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/**
 * Split `#key=<key>` out of a URL fragment: the key (URL-decoded) and the fragment left without
 * it ("" when nothing is left). Other `&`-separated parts of the fragment are kept.
 */
export function splitKeyFromHash(hash: string): { key?: string; rest: string } {
  const parts = hash.replace(/^#/, "").split("&");
  let key: string | undefined;
  const kept = parts.filter((part) => {
    if (!part.startsWith("key=")) return part !== "";
    try {
      key = decodeURIComponent(part.slice(4)).trim() || undefined;
    } catch {
      key = part.slice(4).trim() || undefined;
    }
    return false;
  });
  return { key, rest: kept.length > 0 ? `#${kept.join("&")}` : "" };
}

/**
 * What was pasted into the key prompt, as a key: the key itself, or a whole login URL
 * (`http://host:8080/#key=fk_…`), or `Bearer fk_…`; surrounding whitespace and quotes go.
 */
export function keyFromInput(input: string): string {
  const text = input.trim().replace(/^["']|["']$/g, "");
  const hashAt = text.indexOf("#");
  if (hashAt >= 0) {
    const { key } = splitKeyFromHash(text.slice(hashAt));
    if (key) return key;
  }
  return text.replace(/^Bearer\s+/i, "");
}

/** Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), rounded up. */
export function retryAfterSeconds(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/** The part of the Web Storage API the key needs. */
export type KeyStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

/**
 * The key and, when it was just dropped, why (shown by the key prompt); `offered`: a key a
 * `#key=` link brought to a tab without one, shown in the prompt and used only once the user
 * signs in with it.
 */
export interface KeyState {
  key?: string;
  notice?: string;
  offered?: string;
}

/**
 * The current key, mirrored in `storage`, with change notification for React
 * (`useSyncExternalStore`). Storage failures (private mode, quota) leave the key in memory.
 */
export class KeySession {
  private state: KeyState;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly storage: KeyStorage | undefined) {
    let key: string | undefined;
    try {
      key = storage?.getItem(KEY_STORAGE_NAME) ?? undefined;
    } catch {
      key = undefined;
    }
    this.state = { key: key || undefined };
  }

  /** The current state; the same object until it changes. */
  readonly snapshot = (): KeyState => this.state;

  readonly key = (): string | undefined => this.state.key;

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Use `key` from now on and keep it in storage. */
  set(key: string): void {
    try {
      this.storage?.setItem(KEY_STORAGE_NAME, key);
    } catch {
      // In memory only.
    }
    this.update({ key });
  }

  /** Forget the key, and any key a link offered (sign out, or the runtime rejected it: `notice` says so). */
  clear(notice?: string): void {
    try {
      this.storage?.removeItem(KEY_STORAGE_NAME);
    } catch {
      // Nothing stored.
    }
    this.update({ notice });
  }

  /**
   * Take a `#key=` out of the address bar and the current history entry (`replaceState`), so it
   * stays out of the page's history entry, bookmarks and screenshots, and offer it: a tab without
   * a key shows the key prompt filled in with it, and uses it only once the user signs in. A link
   * never signs a tab in by itself: anyone can send one, and a victim signed in with the sender's
   * key would enrol people under it. A tab with a key keeps it, and the offered key is dropped
   * (sign out first to use it). Returns whether a key is offered.
   */
  adoptFromLocation(
    location: Pick<Location, "hash" | "pathname" | "search">,
    history: Pick<History, "replaceState" | "state">,
  ): boolean {
    if (!/^#?(?:[^&]*&)*key=/.test(location.hash)) return false;
    const { key, rest } = splitKeyFromHash(location.hash);
    history.replaceState(history.state, "", `${location.pathname}${location.search}${rest}`);
    if (!key || this.key() !== undefined) return false;
    this.update({ notice: this.state.notice, offered: key });
    return true;
  }

  private update(state: KeyState): void {
    this.state = state;
    for (const listener of [...this.listeners]) listener();
  }
}

function browserStorage(): KeyStorage | undefined {
  try {
    return typeof sessionStorage === "undefined" ? undefined : sessionStorage;
  } catch {
    return undefined;
  }
}

/** The page's key session (this tab's `sessionStorage`). */
export const keySession = new KeySession(browserStorage());
