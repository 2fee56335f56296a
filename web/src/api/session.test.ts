import { afterEach, describe, expect, it, vi } from "vitest";
import { createGraphQL } from "./graphql";
import { SESSION_KEY, SessionManager, sessionFromTokens, tokensFromFragment } from "./session";

const pair = (n: number, expiresIn = 900) => ({
  access_token: `access-${n}`,
  refresh_token: `refresh-${n}`,
  token_type: "Bearer",
  expires_in: expiresIn,
  refresh_expires_in: 86400,
});

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

function manager(fetchImpl: typeof fetch, now = () => 1_000_000) {
  return new SessionManager({ storage: localStorage, fetch: fetchImpl, now, locks: null, window: null, refreshJitterMs: 0 });
}

afterEach(() => vi.useRealTimers());

describe("SessionManager", () => {
  it("stores the pair in localStorage under pinacle.session", () => {
    const m = manager(vi.fn());
    m.setTokens(pair(1));
    const stored = JSON.parse(localStorage.getItem(SESSION_KEY)!);
    expect(stored).toMatchObject({ accessToken: "access-1", refreshToken: "refresh-1" });
    expect(stored.expiresAt).toBe(1_000_000 + 900_000);
    expect(stored.refreshAt).toBe(1_000_000 + 900_000 - 60_000);
    m.dispose();
  });

  it("on a 401 refreshes once, stores the rotated pair and retries", async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const fetchImpl = vi.fn(async (url: string, init?: RequestInit) => {
      calls.push([url, init]);
      if (url === "/api/v1/auth/refresh") return json(200, pair(2));
      const auth = new Headers(init?.headers).get("Authorization");
      return auth === "Bearer access-2" ? json(200, { ok: true }) : json(401, { error: { code: "unauthorized", message: "expired" } });
    }) as unknown as typeof fetch;
    const m = manager(fetchImpl);
    m.setTokens(pair(1));
    const res = await m.fetch("/api/v1/pods/x/files?path=/");
    expect(res.status).toBe(200);
    expect(calls.map((c) => c[0])).toEqual(["/api/v1/pods/x/files?path=/", "/api/v1/auth/refresh", "/api/v1/pods/x/files?path=/"]);
    expect(JSON.parse(calls[1]![1]!.body as string)).toEqual({ refresh_token: "refresh-1" });
    expect(JSON.parse(localStorage.getItem(SESSION_KEY)!).refreshToken).toBe("refresh-2");
    m.dispose();
  });

  it("refreshes before expiry, once for concurrent callers (refresh tokens rotate)", async () => {
    let t = 1_000_000;
    let refreshes = 0;
    const fetchImpl = vi.fn(async (url: string) => {
      if (url === "/api/v1/auth/refresh") {
        refreshes++;
        await new Promise((r) => setTimeout(r, 5));
        return json(200, pair(1 + refreshes));
      }
      return json(200, {});
    }) as unknown as typeof fetch;
    const m = manager(fetchImpl, () => t);
    m.setTokens(pair(1));
    expect(await m.accessToken()).toBe("access-1");
    t += 850_000; // inside the last minute
    const tokens = await Promise.all([m.accessToken(), m.accessToken(), m.accessToken()]);
    expect(tokens).toEqual(["access-2", "access-2", "access-2"]);
    expect(refreshes).toBe(1);
    m.dispose();
  });

  it("a refused refresh signs out", async () => {
    const fetchImpl = vi.fn(async (url: string) =>
      url === "/api/v1/auth/refresh"
        ? json(401, { error: { code: "unauthorized", message: "refresh token reused" } })
        : json(401, { error: { code: "unauthorized", message: "no" } }),
    ) as unknown as typeof fetch;
    const m = manager(fetchImpl);
    const seen: (string | null)[] = [];
    m.subscribe((s) => seen.push(s?.accessToken ?? null));
    m.setTokens(pair(1));
    await expect(m.fetch("/graphql")).rejects.toMatchObject({ code: "session_expired" });
    expect(m.signedIn).toBe(false);
    expect(localStorage.getItem(SESSION_KEY)).toBeNull();
    expect(seen).toEqual(["access-1", null]);
    m.dispose();
  });

  it("a rate-limited refresh keeps the session (429 is not a refusal)", async () => {
    const fetchImpl = vi.fn(async (url: string) =>
      url === "/api/v1/auth/refresh"
        ? json(429, { error: { code: "rate_limited", message: "slow down" } })
        : json(401, { error: { code: "unauthorized", message: "no" } }),
    ) as unknown as typeof fetch;
    const m = manager(fetchImpl);
    m.setTokens(pair(1));
    await expect(m.fetch("/graphql")).rejects.toMatchObject({ code: "rate_limited" });
    expect(m.signedIn).toBe(true);
    expect(localStorage.getItem(SESSION_KEY)).toContain("access-1");
    m.dispose();
  });

  it("adopts a pair another tab already rotated instead of refreshing again", async () => {
    const fetchImpl = vi.fn(async () => json(500, {})) as unknown as typeof fetch;
    const m = manager(fetchImpl);
    m.setTokens(pair(1));
    // another tab refreshed meanwhile
    localStorage.setItem(SESSION_KEY, JSON.stringify(sessionFromTokens(pair(7), 1_000_000)));
    const s = await m.refresh();
    expect(s.accessToken).toBe("access-7");
    expect(fetchImpl).not.toHaveBeenCalled();
    m.dispose();
  });

  it("reads the GitHub sign-in fragment", () => {
    expect(tokensFromFragment("#access_token=a&refresh_token=r&expires_in=600")).toMatchObject({
      access_token: "a",
      refresh_token: "r",
      expires_in: 600,
    });
    expect(tokensFromFragment("#error=access_denied")).toBeNull();
  });
});

describe("GraphQL over fetch", () => {
  it("raises the first error with its code and diagnostics", async () => {
    const fetchImpl = vi.fn(async () =>
      json(200, {
        data: null,
        errors: [
          {
            message: "invalid pinacle.yaml",
            extensions: { code: "invalid_config", details: [{ severity: "error", line: 1, column: 1, message: "m" }] },
          },
        ],
      }),
    ) as unknown as typeof fetch;
    const m = manager(fetchImpl);
    m.setTokens(pair(1));
    const gql = createGraphQL(m);
    await expect(gql("mutation CreatePod { x }")).rejects.toMatchObject({
      code: "invalid_config",
      message: "invalid pinacle.yaml",
      details: [{ severity: "error", line: 1, column: 1, message: "m" }],
    });
    const init = (fetchImpl as unknown as { mock: { calls: [string, RequestInit][] } }).mock.calls[0]![1];
    expect(new Headers(init.headers).get("Authorization")).toBe("Bearer access-1");
    expect(JSON.parse(init.body as string)).toEqual({ query: "mutation CreatePod { x }", variables: {} });
    m.dispose();
  });
});
