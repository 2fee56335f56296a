import { errorFromResponse } from "./errors";
import type { SessionManager, TokenResponse } from "./session";

export interface Providers {
  github: boolean;
  signup: boolean;
}

export const GITHUB_START = "/api/v1/auth/github/start";

/** Set when this tab starts a GitHub sign-in; `/auth/complete` accepts a
 *  token pair only while it is set and fresh (10 minutes), so a crafted
 *  link cannot sign a visitor into someone else's account. */
const GITHUB_PENDING = "pinacle.github.pending";
const GITHUB_PENDING_MS = 10 * 60 * 1000;

export function markGithubSignInStarted(now = Date.now()): void {
  try {
    sessionStorage.setItem(GITHUB_PENDING, String(now));
  } catch {
    /* storage unavailable: the landing page will refuse */
  }
}

/** Whether this tab started a GitHub sign-in lately; forgets it either way. */
export function takeGithubSignInStarted(now = Date.now()): boolean {
  try {
    const at = Number(sessionStorage.getItem(GITHUB_PENDING));
    sessionStorage.removeItem(GITHUB_PENDING);
    return Number.isFinite(at) && at > 0 && now - at < GITHUB_PENDING_MS;
  } catch {
    return false;
  }
}

async function postJson<T>(url: string, body: unknown): Promise<T> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw await errorFromResponse(res);
  return (await res.json()) as T;
}

export interface AuthApi {
  providers(): Promise<Providers>;
  /** Signs in and stores the session. */
  login(name: string, password: string): Promise<void>;
  /** Creates the account, then signs in. */
  signup(name: string, password: string): Promise<void>;
  /** Revokes the session on the server (best effort) and forgets it. */
  logout(): Promise<void>;
}

export function createAuthApi(session: SessionManager): AuthApi {
  const login = async (name: string, password: string) => {
    const t = await postJson<TokenResponse>("/api/v1/auth/login", { name, password });
    session.setTokens(t);
  };
  return {
    async providers() {
      const res = await fetch("/api/v1/auth/providers");
      if (!res.ok) throw await errorFromResponse(res);
      const p = (await res.json()) as Partial<Providers>;
      return { github: !!p.github, signup: !!p.signup };
    },
    login,
    async signup(name, password) {
      await postJson<{ id: string; name: string }>("/api/v1/auth/signup", { name, password });
      await login(name, password);
    },
    async logout() {
      const s = session.current;
      if (s) {
        try {
          await fetch("/api/v1/auth/logout", {
            method: "POST",
            headers: { "Content-Type": "application/json", Authorization: `Bearer ${s.accessToken}` },
            body: JSON.stringify({ refresh_token: s.refreshToken }),
          });
        } catch {
          /* signing out locally is what matters */
        }
      }
      session.clear();
    },
  };
}
