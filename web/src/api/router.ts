import { errorFromResponse } from "./errors";

/** One try of one route. */
export interface Attempt {
  model: string;
  provider: string;
  outcome: string;
  error?: string;
  latency_ms: number;
  streamed: boolean;
}

/** The router's result envelope (what every API answers with). */
export interface Envelope {
  id: string;
  status: "running" | "succeeded" | "failed" | "cancelled";
  intent: string | null;
  output: { text: string; finish_reason: string | null } | null;
  engine: {
    route: { model: string; provider: string } | null;
    chosen_by: "client" | "default_route" | "policy";
    reason: string;
    privacy: "local-only" | "hybrid" | "allow-api";
    attempts: Attempt[];
    registry: string;
  };
  usage: {
    latency_ms: number;
    ttft_ms?: number;
    tokens: { input: number; output: number; estimated: boolean };
    cost_usd: number;
    reserved_usd: number;
  };
  error: { code: string; message: string } | null;
  created_at: number;
}

export interface Budget {
  kind: "user" | "team" | "key";
  scope: string;
  cap_usd: number;
  spent_usd: number;
  reserved_usd: number;
}

export interface RouterModel {
  id: string;
  owned_by: string;
  aion: {
    kind: "chat" | "embedding" | "intent";
    tier?: string;
    price_per_mtok_usd?: { input: number; output: number };
    cloud?: boolean;
    health?: { availability: string; consecutive_failures: number; p95_ms: number | null; samples: number };
    description?: string;
    privacy?: string;
  };
}

/** A module the router runs, and where it came from. */
export interface RouterModule {
  name: string;
  version: string;
  runtime: "wasm" | "subprocess";
  package: string | null;
  image: string | null;
}

/** A package installed from a registry, or kept in quarantine. */
export interface RouterPackage {
  name: string;
  state: "installed" | "quarantined";
  reference: string;
  digest: string;
  signed_by: string | null;
  reason: string | null;
  at: string;
}

export interface RouterModules {
  modules: RouterModule[];
  packages: RouterPackage[];
  trusted_keys: string[];
}

export interface RouterApi {
  /** The caller's newest tasks (an admin may ask for everyone's). */
  tasks(all?: boolean): Promise<{ subject: string; task: Envelope }[]>;
  /** Spend against each budget that applies to the caller. */
  usage(): Promise<{ budgets: Budget[]; task: { default_usd: number | null; hard_cap_usd: number } | null }>;
  models(): Promise<RouterModel[]>;
  /** Modules and packages (instance admins; `null` for everyone else). */
  modules(): Promise<RouterModules | null>;
}

type AuthFetch = (input: string, init?: RequestInit) => Promise<Response>;

export function createRouterApi(authFetch: AuthFetch): RouterApi {
  const get = async <T>(path: string): Promise<T> => {
    const res = await authFetch(path);
    if (!res.ok) throw await errorFromResponse(res);
    return (await res.json()) as T;
  };
  return {
    tasks: async (all = false) => (await get<{ tasks: { subject: string; task: Envelope }[] }>(`/v1/tasks?limit=50&all=${all}`)).tasks,
    usage: () => get("/router/usage"),
    models: async () => (await get<{ data: RouterModel[] }>("/v1/models")).data,
    modules: async () => {
      const res = await authFetch("/router/modules");
      if (res.status === 403) return null;
      if (!res.ok) throw await errorFromResponse(res);
      return (await res.json()) as RouterModules;
    },
  };
}
