import { ApiError, SessionExpiredError } from "./errors";
import type { SessionManager } from "./session";

export interface GqlErrorObject {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string; details?: unknown; [k: string]: unknown };
}

export interface GqlOptions {
  signal?: AbortSignal;
  /** Lets the request outlive the page (layout save on unload). */
  keepalive?: boolean;
}

export type GqlFn = <T>(query: string, variables?: Record<string, unknown>, opts?: GqlOptions) => Promise<T>;

const AUTH_CODES = new Set(["unauthorized", "unauthenticated", "UNAUTHENTICATED"]);

/** The first GraphQL error as an ApiError (code from `extensions.code`,
 *  diagnostics from `extensions.details`). */
export function errorFromGraphQL(errors: GqlErrorObject[], status = 200): ApiError {
  const first = errors[0] ?? { message: "Unknown GraphQL error" };
  const code = first.extensions?.code ?? "graphql_error";
  return new ApiError(status, String(code), first.message || String(code), first.extensions?.details);
}

export function createGraphQL(session: SessionManager, endpoint = "/graphql"): GqlFn {
  return async function gql<T>(query: string, variables: Record<string, unknown> = {}, opts: GqlOptions = {}): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const res = await session.fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/graphql-response+json, application/json" },
        body: JSON.stringify({ query, variables }),
        signal: opts.signal,
        keepalive: opts.keepalive,
      });
      let body: { data?: T | null; errors?: GqlErrorObject[]; error?: { code?: string; message?: string } } | null = null;
      try {
        body = await res.json();
      } catch {
        body = null;
      }
      if (res.status === 401) throw new SessionExpiredError();
      if (!body) throw new ApiError(res.status, "bad_response", `The server answered ${res.status} without a GraphQL body.`);
      if (body.error) throw new ApiError(res.status, body.error.code ?? "error", body.error.message ?? "Request failed");
      if (body.errors && body.errors.length > 0) {
        const err = errorFromGraphQL(body.errors, res.status);
        if (attempt === 0 && AUTH_CODES.has(err.code)) {
          await session.refresh();
          continue;
        }
        throw err;
      }
      if (!res.ok) throw new ApiError(res.status, "error", `Request failed: ${res.status}`);
      return body.data as T;
    }
  };
}
