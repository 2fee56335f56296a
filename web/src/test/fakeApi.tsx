import { render, type RenderResult } from "@testing-library/react";
import type { ReactElement } from "react";
import { vi } from "vitest";
import type { Api } from "../api/client";
import { ApiContext } from "../api/context";
import type { FilesApi } from "../api/files";
import { createGithubApi, type GithubApi } from "../api/github";
import type { MemoryApi } from "../api/memory";
import type { RouterApi } from "../api/router";
import type { SubscriptionHandlers } from "../api/subscriptions";
import { SessionManager } from "../api/session";
import { ToastProvider } from "../components/Toasts";

export function operationName(query: string): string {
  return /(?:query|mutation|subscription)\s+(\w+)/.exec(query)?.[1] ?? "anonymous";
}

type Resolver = (vars: Record<string, unknown>) => unknown;

export interface FakeApi extends Api {
  calls: { op: string; vars: Record<string, unknown> }[];
  /** Handlers of open subscriptions, by operation name. */
  subs: Map<string, Set<SubscriptionHandlers<unknown>>>;
  emit(op: string, data: unknown): void;
}

/** An Api whose GraphQL answers come from `resolvers` (by operation name;
 *  a resolver may throw to fail the call) and whose subscriptions the test
 *  drives with `emit`. Its GitHub API goes through `api.session.fetch`
 *  (which a test replaces to answer the REST calls; unreplaced, every call
 *  fails as signed out, without a request), unless `github` overrides it. */
export function fakeApi(
  resolvers: Record<string, Resolver | unknown>,
  files?: Partial<FilesApi>,
  memory?: Partial<MemoryApi>,
  router?: Partial<RouterApi>,
  github?: Partial<GithubApi>,
): FakeApi {
  const calls: FakeApi["calls"] = [];
  const subs: FakeApi["subs"] = new Map();
  const session = new SessionManager({ storage: localStorage, window: null, locks: null });
  const api: FakeApi = {
    calls,
    subs,
    session,
    gql: (async (query: string, vars: Record<string, unknown> = {}) => {
      const op = operationName(query);
      calls.push({ op, vars });
      if (!(op in resolvers)) throw new Error(`no fake resolver for ${op}`);
      const r = resolvers[op];
      return typeof r === "function" ? await (r as Resolver)(vars) : r;
    }) as Api["gql"],
    subscribe: ((query: string, vars: Record<string, unknown>, handlers: SubscriptionHandlers<unknown>) => {
      const op = operationName(query);
      calls.push({ op, vars });
      if (!subs.has(op)) subs.set(op, new Set());
      subs.get(op)!.add(handlers);
      return () => subs.get(op)!.delete(handlers);
    }) as Api["subscribe"],
    emit(op, data) {
      for (const h of subs.get(op) ?? []) h.next(data);
    },
    files: {
      list: vi.fn(async () => []),
      read: vi.fn(async () => ({ text: "", bytes: new Uint8Array(), etag: null })),
      write: vi.fn(async () => null),
      ...files,
    },
    auth: {
      providers: vi.fn(async () => ({ github: false, signup: true })),
      login: vi.fn(async () => undefined),
      signup: vi.fn(async () => undefined),
      logout: vi.fn(async () => undefined),
    },
    memory: {
      open: vi.fn(async () => {
        throw new Error("no fake memory project");
      }),
      ...memory,
    },
    router: {
      tasks: vi.fn(async () => []),
      usage: vi.fn(async () => ({ budgets: [], task: null })),
      models: vi.fn(async () => []),
      modules: vi.fn(async () => null),
      ...router,
    },
    github: { ...createGithubApi((input, init) => api.session.fetch(input, init)), ...github },
    accessToken: async () => "test-token",
  };
  return api;
}

/** One REST request a test's fake server answered. */
export interface RestCall {
  method: string;
  path: string;
  body: unknown;
}

type RestAnswer = unknown | Response | ((body: unknown, path: string) => unknown | Response | Promise<unknown | Response>);

export function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

/** Answers `api.session.fetch` from `routes` ("GET /api/v1/…": a JSON body,
 *  a Response, or a function of the request's body giving either); any
 *  other request gets a 404 in the API's error shape. Returns the requests
 *  made, in order. */
export function fakeRest(api: Api, routes: Record<string, RestAnswer>): RestCall[] {
  const calls: RestCall[] = [];
  api.session.fetch = vi.fn(async (path: string, init: RequestInit = {}) => {
    const method = (init.method ?? "GET").toUpperCase();
    const body = typeof init.body === "string" ? (JSON.parse(init.body) as unknown) : undefined;
    calls.push({ method, path, body });
    const key = `${method} ${path}`;
    if (!(key in routes)) return jsonResponse(404, { error: { code: "not_found", message: `no fake route for ${key}` } });
    const r = routes[key];
    const answer = typeof r === "function" ? await (r as (b: unknown, p: string) => unknown)(body, path) : r;
    return answer instanceof Response ? answer : jsonResponse(200, answer);
  });
  return calls;
}

export function renderWithApi(ui: ReactElement, api: Api): RenderResult {
  return render(
    <ApiContext.Provider value={api}>
      <ToastProvider>{ui}</ToastProvider>
    </ApiContext.Provider>,
  );
}
