import { errorFromResponse } from "./errors";

/** The layers of a project's memory that hold memories (the two logs are
 *  read with `log`/`verify`). */
export const MEMORY_LAYERS = ["semantic", "episodic", "procedural", "rag", "session", "working"] as const;
export type MemoryLayer = (typeof MEMORY_LAYERS)[number];

export interface Memory {
  id: string;
  version: number;
  layer: MemoryLayer;
  content: string;
  metadata: Record<string, unknown>;
  content_hash: string;
  embedder: string;
  created_at: number;
  occurred_at: number;
  session_id?: string;
  expires_at?: number;
  source?: { document: string; start: number; end: number };
  current: boolean;
  deleted_at?: number;
}

export interface Hit {
  memory: Memory;
  score: number;
  similarity: number;
}

export interface LogEntry {
  seq: number;
  record: { at: number; actor: string; action: string; memory_id?: string; version?: number; before?: string; after?: string; detail?: string };
  prev_hash: string;
  hash: string;
}

export interface History {
  id: string;
  versions: Memory[];
  changes: LogEntry[];
}

export interface Verification {
  log: "events" | "changelog";
  ok: boolean;
  entries: number;
  head?: string;
  broken_at?: number;
  reason?: string;
}

/** One project's memory, with a memory token minted for it. */
export interface MemoryProject {
  project: string;
  role: "viewer" | "editor" | "admin";
  list(layers: string[], cursor?: string): Promise<{ memories: Memory[]; next_cursor?: string }>;
  search(query: string, layers: string[]): Promise<Hit[]>;
  history(id: string): Promise<History>;
  verify(log: "events" | "changelog"): Promise<Verification>;
}

export interface MemoryApi {
  /** Opens `project` (a repository or another name) in the caller's own
   *  memory or `team`'s. */
  open(project: string, team?: string): Promise<MemoryProject>;
}

type AuthFetch = (input: string, init?: RequestInit) => Promise<Response>;

const BASE = "/api/v1/memory";

export function createMemoryApi(authFetch: AuthFetch, plainFetch: typeof fetch = (...a) => globalThis.fetch(...a)): MemoryApi {
  return {
    async open(project, team) {
      const mint = async () => {
        const res = await authFetch(`${BASE}/tokens`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(team ? { project, team } : { project }),
        });
        if (!res.ok) throw await errorFromResponse(res);
        return (await res.json()) as { token: string; expires_at: number; project: string; role: MemoryProject["role"] };
      };
      let minted = await mint();
      const call = async <T>(path: string, init: RequestInit = {}): Promise<T> => {
        // memory tokens live 15 minutes: a new one a minute before
        if (minted.expires_at * 1000 - Date.now() < 60_000) minted = await mint();
        const res = await plainFetch(BASE + path, {
          ...init,
          headers: { ...(init.body ? { "content-type": "application/json" } : {}), authorization: `Bearer ${minted.token}` },
        });
        if (!res.ok) throw await errorFromResponse(res);
        return (await res.json()) as T;
      };
      return {
        project: minted.project,
        role: minted.role,
        list: (layers, cursor) => {
          const q = new URLSearchParams({ limit: "50" });
          if (layers.length) q.set("layers", layers.join(","));
          if (cursor) q.set("cursor", cursor);
          return call(`/memories?${q}`);
        },
        search: async (query, layers) =>
          (await call<{ results: Hit[] }>("/search", { method: "POST", body: JSON.stringify({ query, layers, top_k: 20 }) })).results,
        history: (id) => call(`/memories/${encodeURIComponent(id)}/history`),
        verify: (log) => call(`/logs/${log}/verify`),
      };
    },
  };
}
