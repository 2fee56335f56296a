import { ApiError, SessionExpiredError, errorFromResponse } from "./errors";

export const SESSION_KEY = "pinacle.session";

/** What `POST /api/v1/auth/login` and `/refresh` answer. */
export interface TokenResponse {
  access_token: string;
  token_type?: string;
  expires_in: number;
  refresh_token: string;
  refresh_expires_in?: number;
}

export interface Session {
  accessToken: string;
  refreshToken: string;
  /** ms since epoch when the access token expires */
  expiresAt: number;
  /** ms since epoch when we refresh ahead of expiry */
  refreshAt: number;
  refreshExpiresAt: number | null;
}

/** Refresh 20 % of the lifetime ahead, at most one minute ahead. */
export function sessionFromTokens(t: TokenResponse, now: number = Date.now()): Session {
  const lifetime = Math.max(0, Number(t.expires_in) || 0) * 1000;
  const margin = Math.min(60_000, lifetime * 0.2);
  return {
    accessToken: t.access_token,
    refreshToken: t.refresh_token,
    expiresAt: now + lifetime,
    refreshAt: now + lifetime - margin,
    refreshExpiresAt: t.refresh_expires_in ? now + t.refresh_expires_in * 1000 : null,
  };
}

export function parseSession(raw: string | null): Session | null {
  if (!raw) return null;
  try {
    const v = JSON.parse(raw) as Partial<Session>;
    if (
      typeof v.accessToken === "string" &&
      typeof v.refreshToken === "string" &&
      typeof v.expiresAt === "number" &&
      v.accessToken &&
      v.refreshToken
    ) {
      return {
        accessToken: v.accessToken,
        refreshToken: v.refreshToken,
        expiresAt: v.expiresAt,
        refreshAt: typeof v.refreshAt === "number" ? v.refreshAt : v.expiresAt - 60_000,
        refreshExpiresAt: typeof v.refreshExpiresAt === "number" ? v.refreshExpiresAt : null,
      };
    }
  } catch {
    /* corrupt entry */
  }
  return null;
}

/** The `#access_token=...&refresh_token=...&expires_in=N` fragment that
 *  GitHub sign-in lands on. */
export function tokensFromFragment(hash: string): TokenResponse | null {
  const p = new URLSearchParams(hash.replace(/^#/, ""));
  const access = p.get("access_token");
  const refresh = p.get("refresh_token");
  if (!access || !refresh) return null;
  const expires = Number(p.get("expires_in"));
  const refreshExpires = Number(p.get("refresh_expires_in"));
  return {
    access_token: access,
    refresh_token: refresh,
    token_type: p.get("token_type") ?? "Bearer",
    expires_in: Number.isFinite(expires) && expires > 0 ? expires : 900,
    refresh_expires_in: Number.isFinite(refreshExpires) && refreshExpires > 0 ? refreshExpires : undefined,
  };
}

export interface SessionManagerOptions {
  storage?: Storage;
  fetch?: typeof fetch;
  now?: () => number;
  /** Run refresh under a cross-tab lock (Web Locks) when available. */
  locks?: LockManager | null;
  /** Listen for other tabs' changes. */
  window?: Window | null;
  /** Without Web Locks (plain-http pages), each tab's background refresh
   *  waits a random 0..this many ms, so tabs do not race with one refresh
   *  token (reuse revokes the session); the tab that goes second adopts
   *  the pair the first one stored. Default 20 s without locks, 0 with. */
  refreshJitterMs?: number;
}

type Listener = (s: Session | null) => void;

/**
 * Holds the token pair, refreshes it shortly before expiry and on demand
 * (after a 401), and fetches with the bearer token. Refresh tokens rotate and
 * reuse revokes the whole session, so refreshes are single-flight in this tab
 * and, with Web Locks, across tabs; a tab that finds the stored pair already
 * rotated by another tab adopts it instead of refreshing again.
 */
export class SessionManager {
  private session: Session | null;
  private refreshing: Promise<Session> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<Listener>();
  private readonly storage: Storage | null;
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => number;
  private readonly locks: LockManager | null;
  private readonly jitter: number;

  constructor(opts: SessionManagerOptions = {}) {
    this.storage = opts.storage ?? (typeof localStorage !== "undefined" ? localStorage : null);
    this.fetchImpl = opts.fetch ?? ((...a: Parameters<typeof fetch>) => globalThis.fetch(...a));
    this.now = opts.now ?? Date.now;
    this.locks =
      opts.locks !== undefined
        ? opts.locks
        : typeof navigator !== "undefined" && "locks" in navigator
          ? (navigator.locks ?? null)
          : null;
    const jitterMax = opts.refreshJitterMs ?? (this.locks ? 0 : 20_000);
    this.jitter = Math.floor(Math.random() * jitterMax);
    this.session = parseSession(this.readStorage());
    this.schedule();
    const win = opts.window !== undefined ? opts.window : typeof window !== "undefined" ? window : null;
    win?.addEventListener("storage", (e: StorageEvent) => {
      if (e.key !== SESSION_KEY) return;
      const next = parseSession(e.newValue);
      this.session = next;
      this.schedule();
      this.emit();
    });
  }

  get current(): Session | null {
    return this.session;
  }

  get signedIn(): boolean {
    return this.session !== null;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Stores a fresh pair (after login, refresh or GitHub sign-in). */
  setTokens(t: TokenResponse): Session {
    const s = sessionFromTokens(t, this.now());
    this.set(s);
    return s;
  }

  clear(): void {
    this.set(null);
  }

  /** A valid access token, refreshing first when it is about to expire. */
  async accessToken(): Promise<string> {
    const s = this.session;
    if (!s) throw new SessionExpiredError("You are not signed in.");
    if (this.now() >= s.refreshAt) {
      try {
        return (await this.refresh()).accessToken;
      } catch (e) {
        // Network trouble: the old token may still be good for a while.
        if (!(e instanceof SessionExpiredError) && this.now() < s.expiresAt) return s.accessToken;
        throw e;
      }
    }
    return s.accessToken;
  }

  /** Rotates the pair; single-flight. Throws SessionExpiredError (and signs
   *  out) when the server refuses the refresh token. */
  refresh(): Promise<Session> {
    if (!this.refreshing) {
      const stale = this.session?.accessToken ?? null;
      const run = () => this.doRefresh(stale);
      const p: Promise<Session> = this.locks
        ? (this.locks.request("pinacle.session.refresh", run) as unknown as Promise<Session>)
        : run();
      const tracked = p.finally(() => {
        if (this.refreshing === tracked) this.refreshing = null;
      });
      this.refreshing = tracked;
      return tracked;
    }
    return this.refreshing;
  }

  /** fetch with `Authorization: Bearer`; on 401 refreshes once and retries. */
  async fetch(input: string, init: RequestInit = {}): Promise<Response> {
    const token = await this.accessToken();
    const res = await this.fetchImpl(input, withBearer(init, token));
    if (res.status !== 401) return res;
    const fresh = await this.refresh();
    return this.fetchImpl(input, withBearer(init, fresh.accessToken));
  }

  private async doRefresh(staleAccess: string | null): Promise<Session> {
    // Another tab may have rotated the pair already: adopt it.
    const stored = parseSession(this.readStorage());
    if (stored && staleAccess !== null && stored.accessToken !== staleAccess && this.now() < stored.refreshAt) {
      this.session = stored;
      this.schedule();
      this.emit();
      return stored;
    }
    const current = stored ?? this.session;
    if (!current) throw new SessionExpiredError("You are not signed in.");
    let res: Response;
    try {
      res = await this.fetchImpl("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refreshToken }),
      });
    } catch (e) {
      throw e instanceof Error ? e : new Error(String(e));
    }
    if (!res.ok) {
      const err = await errorFromResponse(res);
      // refused (bad, reused or revoked token): signed out; a rate limit
      // (429) or a timeout is not a refusal, the pair may still work
      if (res.status === 400 || res.status === 401 || res.status === 403) {
        this.set(null);
        throw new SessionExpiredError(err.message ? `Your session has ended (${err.message}). Please sign in again.` : undefined);
      }
      throw err;
    }
    const body = (await res.json()) as TokenResponse;
    if (!body.access_token || !body.refresh_token) throw new ApiError(500, "internal", "The refresh answer has no tokens.");
    return this.setTokens(body);
  }

  private set(s: Session | null): void {
    this.session = s;
    try {
      if (s) this.storage?.setItem(SESSION_KEY, JSON.stringify(s));
      else this.storage?.removeItem(SESSION_KEY);
    } catch {
      /* storage full or disabled: keep the session in memory */
    }
    this.schedule();
    this.emit();
  }

  private readStorage(): string | null {
    try {
      return this.storage?.getItem(SESSION_KEY) ?? null;
    } catch {
      return null;
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const s = this.session;
    if (!s) return;
    const delay = Math.max(1000, Math.min(s.refreshAt - this.now() + this.jitter, 2 ** 31 - 1));
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.session && this.now() >= this.session.refreshAt - 1000) {
        // Errors surface on the next request; a refused refresh signs out.
        // Another tab may have stored a new pair meanwhile: adopt it.
        const stored = parseSession(this.readStorage());
        if (stored && stored.accessToken !== this.session.accessToken && this.now() < stored.refreshAt) {
          this.set(stored);
          return;
        }
        this.refresh().catch(() => undefined);
      } else {
        this.schedule();
      }
    }, delay);
  }

  private emit(): void {
    for (const l of [...this.listeners]) l(this.session);
  }

  /** Stops the timer (tests). */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }
}

function withBearer(init: RequestInit, token: string): RequestInit {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}
