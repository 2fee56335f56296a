import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "../App";
import { fakeApi, fakeRest, jsonResponse, renderWithApi } from "../test/fakeApi";
import { AdminPage } from "./AdminPage";

const admin = { Me: { me: { id: "u1", name: "root", isAdmin: true } } };
const STATUS = { "GET /api/v1/github/status": { app: { configured: true, install_url: "https://github.com/apps/pinacle/installations/new" } } };
const REPOS = [
  { full_name: "octo/app", private: true, default_branch: "main", installation_id: 42, previews: false },
  { full_name: "octo/docs", private: false, default_branch: "main", installation_id: 42, previews: true },
];
const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();
const DELIVERIES = [
  {
    id: "d1",
    event: "pull_request",
    action: "opened",
    repository: "octo/app",
    outcome: "failed",
    detail: "the pod could not be created: no host has room",
    received_at: minutesAgo(5),
    processed_at: minutesAgo(4),
  },
  { id: "d2", event: "push", action: "", repository: "octo/app", outcome: "processed", detail: "2 pods behind", received_at: minutesAgo(3), processed_at: minutesAgo(3) },
  { id: "d3", event: "ping", action: "", repository: null, outcome: "queued", detail: "", received_at: minutesAgo(1), processed_at: null },
];
const routes = (over: Record<string, unknown> = {}) => ({
  ...STATUS,
  "GET /api/v1/admin/github/installations": {
    installations: [
      { id: 42, account: "octo", account_type: "Organization", suspended: false, repositories: 3 },
      { id: 7, account: "ann", account_type: "User", suspended: true, repositories: 1 },
    ],
  },
  "GET /api/v1/admin/github/deliveries?limit=50": { deliveries: DELIVERIES },
  "GET /api/v1/github/repositories": { repositories: REPOS },
  ...over,
});

afterEach(() => window.history.replaceState(null, "", "/"));

describe("admin page, GitHub section", () => {
  it("shows the installations and the deliveries, failed ones marked", async () => {
    const api = fakeApi(admin);
    fakeRest(api, routes());
    renderWithApi(<AdminPage />, api);
    expect(await screen.findByRole("heading", { name: "GitHub" })).toBeInTheDocument();

    const installs = await screen.findByRole("table", { name: "GitHub App installations" });
    const octo = within(installs).getByText("octo").closest("tr")!;
    expect(within(octo).getByText("Organization")).toBeInTheDocument();
    expect(within(octo).getByText("3")).toBeInTheDocument();
    expect(within(octo).getByText("active")).toBeInTheDocument();
    expect(within(within(installs).getByText("ann").closest("tr")!).getByText("suspended")).toBeInTheDocument();

    const deliveries = await screen.findByRole("table", { name: "Webhook deliveries" });
    const rows = within(deliveries).getAllByRole("row").slice(1);
    expect(rows).toHaveLength(3);
    const failed = within(rows[0]!);
    expect(failed.getByText("pull_request.opened")).toBeInTheDocument();
    expect(failed.getByText("octo/app")).toBeInTheDocument();
    expect(failed.getByText("the pod could not be created: no host has room")).toBeInTheDocument();
    expect(failed.getByText("failed")).toHaveClass("outcome-failed");
    expect(failed.getByText("5 min ago")).toBeInTheDocument();
    expect(within(rows[1]!).getByText("processed")).toHaveClass("outcome-processed");
    expect(within(rows[1]!).getByText("processed")).not.toHaveClass("outcome-failed");
    expect(within(rows[2]!).getByText("ping")).toBeInTheDocument();
    expect(within(rows[2]!).getByText("queued")).toHaveAttribute("data-outcome", "queued");
  });

  it("turns PR previews on for a repository with a PUT and shows the answer", async () => {
    const api = fakeApi(admin);
    const requests = fakeRest(
      api,
      routes({
        "PUT /api/v1/admin/github/repositories/octo/app/previews": (body: unknown) => ({
          ...REPOS[0],
          previews: (body as { enabled: boolean }).enabled,
        }),
      }),
    );
    const user = userEvent.setup();
    renderWithApi(<AdminPage />, api);
    const repos = await screen.findByRole("table", { name: "GitHub repositories" });
    const app = within(repos).getByRole("switch", { name: "PR previews for octo/app" });
    expect(app).not.toBeChecked();
    expect(within(repos).getByRole("switch", { name: "PR previews for octo/docs" })).toBeChecked();
    expect(within(within(repos).getByText("octo/app").closest("tr")!).getByText("private")).toBeInTheDocument();

    await user.click(app);
    await waitFor(() => expect(app).toBeChecked());
    expect(requests.filter((r) => r.method === "PUT")).toEqual([
      { method: "PUT", path: "/api/v1/admin/github/repositories/octo/app/previews", body: { enabled: true } },
    ]);
  });

  it("shows the server's message when the toggle is refused, and leaves it as it was", async () => {
    const api = fakeApi(admin);
    fakeRest(
      api,
      routes({
        "PUT /api/v1/admin/github/repositories/octo/docs/previews": jsonResponse(409, {
          error: { code: "conflict", message: "the App may not read pull requests on octo/docs" },
        }),
      }),
    );
    const user = userEvent.setup();
    renderWithApi(<AdminPage />, api);
    const docs = await screen.findByRole("switch", { name: "PR previews for octo/docs" });
    await user.click(docs);
    expect(await screen.findByText("the App may not read pull requests on octo/docs")).toBeInTheDocument();
    expect(docs).toBeChecked();
  });

  it("names the server's flags when the App is not configured", async () => {
    const api = fakeApi(admin);
    const requests = fakeRest(api, { "GET /api/v1/github/status": { app: { configured: false, install_url: null } } });
    renderWithApi(<AdminPage />, api);
    const note = await screen.findByRole("note");
    expect(note).toHaveTextContent("--github-app-id");
    expect(note).toHaveTextContent("--github-app-key-file");
    expect(note).toHaveTextContent("PINACLE_GITHUB_WEBHOOK_SECRET");
    expect(screen.queryByRole("table")).toBeNull();
    expect(requests.map((r) => r.path)).toEqual(["/api/v1/github/status"]);
  });

  it("creates the App by posting GitHub's manifest form", async () => {
    const api = fakeApi(admin);
    const manifest = { name: "Pinacle", hook_attributes: { url: "https://p.example/api/v1/github/webhook" } };
    const requests = fakeRest(api, {
      "GET /api/v1/github/status": { app: { configured: false, install_url: null } },
      "POST /api/v1/admin/github/manifest": { url: "https://github.example/organizations/acme/settings/apps/new?state=s1", manifest },
    });
    const submitted: HTMLFormElement[] = [];
    const submit = vi.spyOn(HTMLFormElement.prototype, "submit").mockImplementation(function (this: HTMLFormElement) {
      submitted.push(this);
    });
    const user = userEvent.setup();
    renderWithApi(<AdminPage />, api);
    await user.type(await screen.findByLabelText("Organisation"), "acme");
    await user.click(screen.getByRole("button", { name: "Create the GitHub App" }));
    await waitFor(() => expect(submitted).toHaveLength(1));
    expect(requests.find((r) => r.method === "POST")?.body).toEqual({ organization: "acme" });
    const form = submitted[0];
    expect(form.method.toUpperCase()).toBe("POST");
    expect(form.action).toBe("https://github.example/organizations/acme/settings/apps/new?state=s1");
    expect(JSON.parse((form.elements.namedItem("manifest") as HTMLInputElement).value)).toEqual(manifest);
    submit.mockRestore();
  });

  it("shows the message of a table that cannot be read", async () => {
    const api = fakeApi(admin);
    fakeRest(
      api,
      routes({
        "GET /api/v1/admin/github/deliveries?limit=50": jsonResponse(500, { error: { code: "internal", message: "the deliveries table is locked" } }),
      }),
    );
    renderWithApi(<AdminPage />, api);
    expect(await screen.findByRole("alert")).toHaveTextContent("the deliveries table is locked");
    expect(await screen.findByRole("table", { name: "GitHub App installations" })).toBeInTheDocument();
  });

  it("shows no GitHub section to someone who is not an instance administrator", async () => {
    const api = fakeApi({ Me: { me: { id: "u2", name: "ann", isAdmin: false } } });
    const requests = fakeRest(api, routes());
    renderWithApi(<AdminPage />, api);
    expect(await screen.findByText("Only instance administrators see this page")).toBeInTheDocument();
    expect(screen.queryByRole("heading", { name: "GitHub" })).toBeNull();
    expect(screen.queryByRole("table")).toBeNull();
    expect(requests).toEqual([]);
  });

  it("is in the top bar for instance administrators only", async () => {
    window.history.replaceState(null, "", "/admin");
    const api = fakeApi({ ...admin, Pods: { pods: [] } });
    fakeRest(api, routes());
    api.session.setTokens({ access_token: "a", refresh_token: "r", expires_in: 900 });
    renderWithApi(<App api={api} />, api);
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect(await within(nav).findByRole("link", { name: "Admin" })).toHaveAttribute("aria-current", "page");
    expect(await screen.findByRole("heading", { name: "GitHub" })).toBeInTheDocument();
    api.session.dispose();
  });

  it("is not in the top bar for anyone else", async () => {
    const api = fakeApi({ Me: { me: { id: "u2", name: "ann", isAdmin: false } }, Pods: { pods: [] } });
    fakeRest(api, {});
    api.session.setTokens({ access_token: "a", refresh_token: "r", expires_in: 900 });
    renderWithApi(<App api={api} />, api);
    expect(await screen.findByText("ann")).toBeInTheDocument();
    expect(within(screen.getByRole("navigation", { name: "Main" })).queryByRole("link", { name: "Admin" })).toBeNull();
    api.session.dispose();
  });
});
