import { createClient, type Client } from "graphql-ws";
import { errorFromGraphQL, type GqlErrorObject } from "./graphql";
import type { SessionManager } from "./session";

export interface SubscriptionHandlers<T> {
  next(data: T): void;
  error?(err: Error): void;
  complete?(): void;
}

export type SubscribeFn = <T>(
  query: string,
  variables: Record<string, unknown>,
  handlers: SubscriptionHandlers<T>,
) => () => void;

export function graphqlWsUrl(loc: Pick<Location, "protocol" | "host"> = location): string {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/graphql/ws`;
}

/** One graphql-ws connection shared by every subscription; lazy (opened
 *  with the first subscription), re-authenticated with a fresh access token
 *  on every (re)connect, retried forever with graphql-ws's backoff. */
export function createSubscriptions(session: SessionManager, url: string = graphqlWsUrl()): {
  subscribe: SubscribeFn;
  dispose(): void;
} {
  let client: Client | null = null;
  let forceRefresh = false;
  const getClient = () => {
    if (!client) {
      client = createClient({
        url,
        lazy: true,
        retryAttempts: Number.MAX_SAFE_INTEGER,
        shouldRetry: () => session.signedIn,
        keepAlive: 25_000,
        connectionParams: async () => {
          if (forceRefresh) {
            forceRefresh = false;
            await session.refresh();
          }
          return { token: await session.accessToken() };
        },
        on: {
          closed: (event) => {
            const code = (event as CloseEvent | undefined)?.code;
            // 4401 / 4403: the token was refused; refresh before the retry
            if (code === 4401 || code === 4403) forceRefresh = true;
          },
        },
      });
    }
    return client;
  };
  // Signing out closes the connection; signing in again opens a new one.
  session.subscribe((s) => {
    if (!s && client) {
      void client.dispose();
      client = null;
    }
  });
  return {
    subscribe<T>(query: string, variables: Record<string, unknown>, handlers: SubscriptionHandlers<T>) {
      return getClient().subscribe<T>(
        { query, variables },
        {
          next: (msg) => {
            if (msg.errors && msg.errors.length > 0) {
              handlers.error?.(errorFromGraphQL(msg.errors as unknown as GqlErrorObject[]));
              return;
            }
            if (msg.data) handlers.next(msg.data as T);
          },
          error: (err) => {
            if (Array.isArray(err)) handlers.error?.(errorFromGraphQL(err as GqlErrorObject[]));
            else if (err instanceof Error) handlers.error?.(err);
            else handlers.error?.(new Error("The live connection closed."));
          },
          complete: () => handlers.complete?.(),
        },
      );
    },
    dispose() {
      if (client) void client.dispose();
      client = null;
    },
  };
}
