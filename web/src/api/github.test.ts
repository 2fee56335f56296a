import { describe, expect, it, vi } from "vitest";
import { ApiError } from "./errors";
import { createGithubApi, podGithub, repositoryPath } from "./github";

const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

function server(answer: (path: string, init?: RequestInit) => Response) {
  const fetch = vi.fn(async (path: string, init?: RequestInit) => answer(path, init));
  return { fetch, api: createGithubApi(fetch) };
}

describe("GitHub API client", () => {
  it("reads the status, repositories and branches (each path part escaped)", async () => {
    const { fetch, api } = server((path) => {
      if (path === "/api/v1/github/status") return json(200, { app: { configured: true, install_url: null } });
      if (path === "/api/v1/github/repositories")
        return json(200, { repositories: [{ full_name: "octo/app", private: true, default_branch: "main", installation_id: 42, previews: false }] });
      return json(200, { branches: [{ name: "main", sha: "a".repeat(40) }] });
    });
    expect(await api.status()).toEqual({ configured: true, install_url: null });
    expect((await api.repositories()).map((r) => r.full_name)).toEqual(["octo/app"]);
    expect(await api.branches("my org/a.b")).toEqual([{ name: "main", sha: "a".repeat(40) }]);
    expect(fetch.mock.calls.at(-1)![0]).toBe("/api/v1/github/repositories/my%20org/a.b/branches");
  });

  it("sends the previews toggle as a PUT with a JSON body", async () => {
    const { fetch, api } = server(() => json(200, { full_name: "octo/app", private: true, default_branch: "main", installation_id: 42, previews: true }));
    expect((await api.setPreviews("octo/app", true)).previews).toBe(true);
    const [path, init] = fetch.mock.calls[0]!;
    expect(path).toBe("/api/v1/admin/github/repositories/octo/app/previews");
    expect(init?.method).toBe("PUT");
    expect(new Headers(init?.headers).get("content-type")).toBe("application/json");
    expect(JSON.parse(String(init?.body))).toEqual({ enabled: true });
  });

  it("asks for the newest deliveries and the installations", async () => {
    const { fetch, api } = server((path) => (path.includes("deliveries") ? json(200, { deliveries: [] }) : json(200, { installations: [] })));
    await api.deliveries(50);
    await api.installations();
    expect(fetch.mock.calls.map((c) => c[0])).toEqual(["/api/v1/admin/github/deliveries?limit=50", "/api/v1/admin/github/installations"]);
  });

  it("throws the server's error, message included", async () => {
    const { api } = server(() => json(403, { error: { code: "forbidden", message: "instance administrators only" } }));
    const err = await api.installations().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 403, code: "forbidden", message: "instance administrators only" });
  });

  it("maps the pod list's github by pod id, skipping pods without one", async () => {
    const g = { repository: "octo/app", pull_request: 7, head_sha: "b".repeat(40), behind: null, deploy_key: true };
    const { api } = server(() => json(200, { pods: [{ id: "p1", github: g }, { id: "p2", github: null }, { id: "p3" }] }));
    const links = await api.podLinks();
    expect([...links.keys()]).toEqual(["p1"]);
    expect(links.get("p1")).toEqual(g);
  });

  it("reads a pod's github defensively", () => {
    expect(podGithub({})).toBeNull();
    expect(podGithub({ github: null })).toBeNull();
    expect(podGithub({ github: { pull_request: 1 } })).toBeNull();
    expect(podGithub({ github: { repository: "octo/app", behind: { sha: "c".repeat(40), since: "2026-05-01T10:00:00Z" } } })).toEqual({
      repository: "octo/app",
      pull_request: null,
      head_sha: "",
      behind: { sha: "c".repeat(40), since: "2026-05-01T10:00:00Z" },
      deploy_key: false,
    });
    expect(() => repositoryPath("no-slash")).toThrow();
  });
});
