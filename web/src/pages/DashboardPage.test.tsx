import { act, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { ApiError } from "../api/errors";
import type { PodSummary } from "../api/types";
import { fakeApi, fakeRest, renderWithApi } from "../test/fakeApi";
import { DashboardPage } from "./DashboardPage";

const tier = { name: "small", vcpus: 1, memoryBytes: 2 ** 31, diskBytes: 2 ** 33 };
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();
const pod = (over: Partial<PodSummary>): PodSummary => ({
  id: "p-" + (over.name ?? "x"),
  name: "x",
  owner: "ann",
  team: null,
  state: "RUNNING",
  stateReason: null,
  template: "node",
  tier,
  createdAt: minutesAgo(3),
  lastActivityAt: minutesAgo(1),
  ...over,
});

const row = (name: string) => screen.getByRole("link", { name }).closest("tr")!;

describe("dashboard", () => {
  it("lists pods with status, tier, template, owner and age", async () => {
    const api = fakeApi({
      Pods: { pods: [pod({ name: "web" }), pod({ name: "api", team: "core", state: "STOPPED", template: "python" })] },
    });
    renderWithApi(<DashboardPage />, api);
    expect(await screen.findByRole("link", { name: "web" })).toHaveAttribute("href", "/pods/web");
    expect(screen.getByRole("link", { name: "api" })).toHaveAttribute("href", "/pods/core/api");
    const web = within(row("web"));
    expect(web.getByText("Running")).toBeInTheDocument();
    expect(web.getByText("small")).toBeInTheDocument();
    expect(web.getByText("node")).toBeInTheDocument();
    expect(web.getByText("ann")).toBeInTheDocument();
    expect(web.getByText("3 min ago")).toBeInTheDocument();
    expect(within(row("api")).getByText("core")).toBeInTheDocument();
    expect(within(row("api")).getByText("Stopped")).toBeInTheDocument();
    expect(web.queryByText(/^Host /)).toBeNull();
  });

  it("says when a pod's host is not ready", async () => {
    const api = fakeApi({ Pods: { pods: [pod({ name: "far", hostStatus: "unreachable" }), pod({ name: "near" })] } });
    renderWithApi(<DashboardPage />, api);
    await screen.findByRole("link", { name: "far" });
    const badge = within(row("far")).getByText("Host unreachable");
    expect(badge).toHaveAttribute("data-host-status", "unreachable");
    expect(badge.getAttribute("title")).toContain("stopped reporting");
    expect(within(row("near")).queryByText(/^Host /)).toBeNull();
  });

  it("applies podUpdates live: state changes, new pods, deletions", async () => {
    const api = fakeApi({ Pods: { pods: [pod({ name: "web", state: "PROVISIONING" })] } });
    renderWithApi(<DashboardPage />, api);
    await screen.findByRole("link", { name: "web" });
    expect(within(row("web")).getByText("Provisioning")).toBeInTheDocument();
    expect(api.subs.get("PodUpdates")?.size).toBe(1);

    act(() => api.emit("PodUpdates", { podUpdates: pod({ name: "web", state: "RUNNING" }) }));
    expect(within(row("web")).getByText("Running")).toBeInTheDocument();
    expect(within(row("web")).queryByText("Provisioning")).toBeNull();

    act(() => api.emit("PodUpdates", { podUpdates: pod({ name: "db", state: "PENDING" }) }));
    expect(within(row("db")).getByText("Pending")).toBeInTheDocument();

    act(() => api.emit("PodUpdates", { podUpdates: pod({ name: "web", state: "DELETED" }) }));
    expect(screen.queryByRole("link", { name: "web" })).toBeNull();
    // no reload happened
    expect(api.calls.filter((c) => c.op === "Pods")).toHaveLength(1);
  });

  it("an update that arrives while the list loads is not lost", async () => {
    let release!: () => void;
    const api = fakeApi({
      Pods: () => new Promise((r) => (release = () => r({ pods: [pod({ name: "web", state: "STARTING" })] }))),
    });
    renderWithApi(<DashboardPage />, api);
    expect(screen.getByRole("status")).toHaveTextContent("Loading pods");
    act(() => api.emit("PodUpdates", { podUpdates: pod({ name: "web", state: "RUNNING" }) }));
    await act(async () => release());
    expect(within(row("web")).getByText("Running")).toBeInTheDocument();
  });

  it("shows the empty state with a create button", async () => {
    const api = fakeApi({ Pods: { pods: [] } });
    renderWithApi(<DashboardPage />, api);
    expect(await screen.findByText("No pods yet")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Create your first pod" })).toBeInTheDocument();
  });

  it("shows an error with a retry", async () => {
    let fail = true;
    const api = fakeApi({
      Pods: () => {
        if (fail) throw new ApiError(500, "internal", "database is on fire");
        return { pods: [pod({ name: "web" })] };
      },
    });
    renderWithApi(<DashboardPage />, api);
    expect(await screen.findByRole("alert")).toHaveTextContent("database is on fire");
    fail = false;
    act(() => screen.getByRole("button", { name: "Try again" }).click());
    expect(await screen.findByRole("link", { name: "web" })).toBeInTheDocument();
  });

  it("shows a GitHub pod's repository, its pull request, and a warning only when the branch moved on", async () => {
    const api = fakeApi({
      Pods: { pods: [pod({ name: "pr-7" }), pod({ name: "app" }), pod({ name: "plain" })] },
    });
    const head = "1111111111111111111111111111111111111111";
    const requests = fakeRest(api, {
      "GET /api/v1/pods": {
        pods: [
          {
            id: "p-pr-7",
            name: "pr-7",
            github: {
              repository: "octo/app",
              pull_request: 7,
              head_sha: head,
              behind: { sha: "abc1234def5678abc1234def5678abc1234def56", since: "2026-05-01T10:00:00Z" },
              deploy_key: false,
            },
          },
          { id: "p-app", name: "app", github: { repository: "octo/app", pull_request: null, head_sha: head, behind: null, deploy_key: true } },
          { id: "p-plain", name: "plain", github: null },
        ],
      },
    });
    renderWithApi(<DashboardPage />, api);
    await screen.findByRole("link", { name: "pr-7" });
    const pr = within(row("pr-7"));
    expect(await pr.findByText("PR #7")).toHaveClass("badge");
    expect(pr.getByText("octo/app")).toBeInTheDocument();
    expect(pr.getByText("behind origin: new commits at abc1234")).toHaveClass("badge-behind");

    const app = within(row("app"));
    expect(app.getByText("octo/app")).toBeInTheDocument();
    expect(app.queryByText(/^PR #/)).toBeNull();
    expect(app.queryByText(/behind origin/)).toBeNull();

    const plain = within(row("plain"));
    expect(plain.queryByText("octo/app")).toBeNull();
    expect(plain.queryByText(/behind origin/)).toBeNull();
    expect(requests.map((r) => `${r.method} ${r.path}`)).toEqual(["GET /api/v1/pods"]);
  });

  it("lists the pods even when their GitHub state cannot be read", async () => {
    const api = fakeApi({ Pods: { pods: [pod({ name: "web" })] } });
    fakeRest(api, {});
    renderWithApi(<DashboardPage />, api);
    expect(await screen.findByRole("link", { name: "web" })).toBeInTheDocument();
    expect(screen.queryByRole("alert")).toBeNull();
  });
});
