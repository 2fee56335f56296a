import { errorFromResponse } from "./errors";

/** The GitHub App integration (REST, `/api/v1/github/...` and
 *  `/api/v1/admin/github/...`). */

/** `GET /api/v1/github/status` → `app`. */
export interface GithubAppStatus {
  configured: boolean;
  /** Where a user installs the App on an account; null when not known. */
  install_url: string | null;
}

/** A repository the App is installed on. */
export interface GithubRepository {
  /** `owner/repo` */
  full_name: string;
  private: boolean;
  default_branch: string;
  installation_id: number;
  /** A pod per pull request. */
  previews: boolean;
}

export interface GithubBranch {
  name: string;
  sha: string;
}

export interface GithubInstallation {
  id: number;
  account: string;
  account_type: string;
  suspended: boolean;
  /** How many repositories it covers. */
  repositories: number;
}

export type DeliveryOutcome = "processed" | "failed" | "ignored" | "queued" | "duplicate";

/** One webhook delivery as the server recorded it. */
export interface GithubDelivery {
  id: string;
  event: string;
  action: string | null;
  repository: string | null;
  outcome: DeliveryOutcome;
  detail: string;
  received_at: string;
  processed_at: string | null;
}

/** What a pod cloned from a GitHub repository carries (`github` on a pod). */
export interface PodGithub {
  repository: string;
  /** The pull request a preview pod was made for. */
  pull_request: number | null;
  head_sha: string;
  /** The branch moved on since the pod was cloned. */
  behind: { sha: string; since: string } | null;
  deploy_key: boolean;
}

export type DeployKeyAccess = "read" | "write";

/** The `repository` of a create request for a GitHub repository. */
export interface GithubRepositoryInput {
  github: string;
  branch: string;
  deploy_key?: DeployKeyAccess;
}

export interface GithubApi {
  status(): Promise<GithubAppStatus>;
  /** The repositories the App can reach for the caller. */
  repositories(): Promise<GithubRepository[]>;
  branches(fullName: string): Promise<GithubBranch[]>;
  /** Instance administrators. */
  installations(): Promise<GithubInstallation[]>;
  /** The newest webhook deliveries (instance administrators). */
  deliveries(limit?: number): Promise<GithubDelivery[]>;
  /** Turns pull-request previews on or off (instance administrators). */
  setPreviews(fullName: string, enabled: boolean): Promise<GithubRepository>;
  /** The `github` of each of the caller's pods that has one, by pod id
   *  (`GET /api/v1/pods`). */
  podLinks(): Promise<Map<string, PodGithub>>;
  /** One pod's `github` (`GET /api/v1/pods/{id}`). */
  podLink(id: string): Promise<PodGithub | null>;
  /** The App's manifest and where the browser posts it (GitHub's manifest
   *  flow; instance administrators). */
  manifest(organization?: string): Promise<GithubManifest>;
}

/** What `POST /api/v1/admin/github/manifest` answers. */
export interface GithubManifest {
  url: string;
  manifest: Record<string, unknown>;
}

type AuthFetch = (input: string, init?: RequestInit) => Promise<Response>;

/** `octo/app` → `octo/app` with each part escaped, for a path. */
export function repositoryPath(fullName: string): string {
  const slash = fullName.indexOf("/");
  if (slash <= 0 || slash === fullName.length - 1) throw new Error(`not a repository name: ${fullName}`);
  return `${encodeURIComponent(fullName.slice(0, slash))}/${encodeURIComponent(fullName.slice(slash + 1))}`;
}

/** A pod's `github`, as the server sends it; absent or malformed: null. */
export function podGithub(pod: unknown): PodGithub | null {
  if (!pod || typeof pod !== "object") return null;
  const g = (pod as { github?: unknown }).github;
  if (!g || typeof g !== "object") return null;
  const v = g as Partial<PodGithub>;
  if (typeof v.repository !== "string") return null;
  const behind = v.behind && typeof v.behind === "object" && typeof v.behind.sha === "string" ? v.behind : null;
  return {
    repository: v.repository,
    pull_request: typeof v.pull_request === "number" ? v.pull_request : null,
    head_sha: typeof v.head_sha === "string" ? v.head_sha : "",
    behind,
    deploy_key: v.deploy_key === true,
  };
}

export function createGithubApi(authFetch: AuthFetch): GithubApi {
  const call = async <T>(path: string, init?: RequestInit): Promise<T> => {
    const res = await authFetch(path, init);
    if (!res.ok) throw await errorFromResponse(res);
    return (await res.json()) as T;
  };
  return {
    status: async () => (await call<{ app: GithubAppStatus }>("/api/v1/github/status")).app,
    repositories: async () => (await call<{ repositories: GithubRepository[] }>("/api/v1/github/repositories")).repositories,
    branches: async (fullName) =>
      (await call<{ branches: GithubBranch[] }>(`/api/v1/github/repositories/${repositoryPath(fullName)}/branches`)).branches,
    installations: async () => (await call<{ installations: GithubInstallation[] }>("/api/v1/admin/github/installations")).installations,
    deliveries: async (limit = 50) =>
      (await call<{ deliveries: GithubDelivery[] }>(`/api/v1/admin/github/deliveries?limit=${limit}`)).deliveries,
    setPreviews: (fullName, enabled) =>
      call<GithubRepository>(`/api/v1/admin/github/repositories/${repositoryPath(fullName)}/previews`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ enabled }),
      }),
    podLinks: async () => {
      const { pods } = await call<{ pods: unknown[] }>("/api/v1/pods");
      const links = new Map<string, PodGithub>();
      for (const p of pods ?? []) {
        const g = podGithub(p);
        const id = (p as { id?: unknown }).id;
        if (g && typeof id === "string") links.set(id, g);
      }
      return links;
    },
    podLink: async (id) => podGithub(await call<unknown>(`/api/v1/pods/${encodeURIComponent(id)}`)),
    manifest: (organization) =>
      call<GithubManifest>("/api/v1/admin/github/manifest", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(organization ? { organization } : {}),
      }),
  };
}
