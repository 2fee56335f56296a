import { errorFromResponse } from "./errors";
import type { SessionManager, TokenResponse } from "./session";

export interface Providers {
  github: boolean;
  signup: boolean;
}

export const GITHUB_START = "/api/v1/auth/github/start";

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
