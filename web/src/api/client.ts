import { createAuthApi, type AuthApi } from "./auth";
import { createFilesApi, type FilesApi } from "./files";
import { createGithubApi, type GithubApi } from "./github";
import { createGraphQL, type GqlFn } from "./graphql";
import { createMemoryApi, type MemoryApi } from "./memory";
import { createRouterApi, type RouterApi } from "./router";
import { SessionManager } from "./session";
import { createSubscriptions, type SubscribeFn } from "./subscriptions";

/** Everything the UI needs from the server; components get it from
 *  ApiContext so tests can hand them fakes. */
export interface Api {
  gql: GqlFn;
  subscribe: SubscribeFn;
  files: FilesApi;
  auth: AuthApi;
  /** The agents' memory, per project. */
  memory: MemoryApi;
  /** The AI router: recent tasks, spend, models. */
  router: RouterApi;
  /** The GitHub App: repositories, branches, and (admins) installations,
   *  webhook deliveries and pull-request previews. */
  github: GithubApi;
  /** A valid access token (for the terminal WebSocket). */
  accessToken(): Promise<string>;
  session: SessionManager;
}

export function createApi(session: SessionManager = new SessionManager()): Api {
  const subs = createSubscriptions(session);
  return {
    gql: createGraphQL(session),
    subscribe: subs.subscribe,
    files: createFilesApi((input, init) => session.fetch(input, init)),
    auth: createAuthApi(session),
    memory: createMemoryApi((input, init) => session.fetch(input, init)),
    router: createRouterApi((input, init) => session.fetch(input, init)),
    github: createGithubApi((input, init) => session.fetch(input, init)),
    accessToken: () => session.accessToken(),
    session,
  };
}
