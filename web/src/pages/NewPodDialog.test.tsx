import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/errors";
import type { Diagnostic } from "../api/types";
import { fakeApi, fakeRest, jsonResponse, renderWithApi, type RestCall } from "../test/fakeApi";
import { NewPodDialog } from "./NewPodDialog";

const options = {
  templates: [
    { name: "node", description: "Node.js 22", image: "node", tier: "small", pinacleYaml: "image: node\n" },
    { name: "python", description: "Python 3.12", image: "python", tier: "small", pinacleYaml: "image: python\n" },
  ],
  tiers: [
    { name: "small", vcpus: 1, memoryBytes: 2 * 1024 ** 3, diskBytes: 10 * 1024 ** 3 },
    { name: "large", vcpus: 4, memoryBytes: 8 * 1024 ** 3, diskBytes: 50 * 1024 ** 3 },
  ],
  teams: [{ id: "t1", name: "core", role: "ADMIN" }],
};

const typo: Diagnostic = {
  severity: "error",
  file: "pinacle.yaml",
  line: 2,
  column: 3,
  path: "processes[0].comand",
  message: "unknown field `comand`",
  suggestion: "did you mean `command`?",
};

const pod = (name: string) => ({
  id: "p1",
  name,
  owner: "ann",
  team: null,
  state: "PENDING",
  stateReason: null,
  template: "custom",
  tier: options.tiers[0],
  createdAt: "2025-01-01T00:00:00Z",
  lastActivityAt: "2025-01-01T00:00:00Z",
});

function setup(overrides: Record<string, unknown> = {}, rest?: Parameters<typeof fakeRest>[1]) {
  const api = fakeApi({
    NewPodOptions: options,
    ValidateConfig: ({ yaml }: Record<string, unknown>) => ({
      validateConfig: { ok: !String(yaml).includes("comand"), canonical: null, diagnostics: String(yaml).includes("comand") ? [typo] : [] },
    }),
    CreatePod: ({ input }: Record<string, unknown>) => ({ createPod: pod((input as { name: string }).name) }),
    ...overrides,
  });
  const requests: RestCall[] = rest ? fakeRest(api, rest) : [];
  const onCreated = vi.fn();
  const user = userEvent.setup();
  renderWithApi(<NewPodDialog onClose={() => undefined} onCreated={onCreated} />, api);
  return { api, user, onCreated, requests };
}

const SHA = "0123456789abcdef0123456789abcdef01234567";
const REPOS = [
  { full_name: "octo/app", private: true, default_branch: "main", installation_id: 42, previews: false },
  { full_name: "octo/docs", private: false, default_branch: "trunk", installation_id: 42, previews: true },
  { full_name: "acme/shop", private: false, default_branch: "main", installation_id: 7, previews: false },
];
const configured = (over: Record<string, unknown> = {}) => ({
  "GET /api/v1/github/status": { app: { configured: true, install_url: "https://github.com/apps/pinacle/installations/new" } },
  "GET /api/v1/github/repositories": { repositories: REPOS },
  "GET /api/v1/github/repositories/octo/app/branches": {
    branches: [
      { name: "feature/login", sha: "f".repeat(40) },
      { name: "main", sha: SHA },
    ],
  },
  ...over,
});

describe("new pod dialog", () => {
  it("creates from a template with tier and team", async () => {
    const { api, user, onCreated } = setup();
    const dialog = await screen.findByRole("dialog", { name: "New pod" });
    await within(dialog).findByLabelText("Choose a template");
    await user.type(within(dialog).getByLabelText("Name"), "web-1");
    await user.selectOptions(within(dialog).getByLabelText("Choose a template"), "python");
    await user.selectOptions(within(dialog).getByLabelText("Tier"), "large");
    await user.selectOptions(within(dialog).getByLabelText("Team"), "core");
    await user.click(within(dialog).getByRole("button", { name: "Create" }));
    await waitFor(() => expect(onCreated).toHaveBeenCalled());
    expect(api.calls.find((c) => c.op === "CreatePod")!.vars).toEqual({
      input: { name: "web-1", template: "python", tier: "large", team: "core" },
    });
  });

  it("creates from a template with a registry image instead of the template's", async () => {
    const { api, user, onCreated } = setup();
    const dialog = await screen.findByRole("dialog", { name: "New pod" });
    await within(dialog).findByLabelText("Choose a template");
    await user.type(within(dialog).getByLabelText("Name"), "py");
    await user.type(within(dialog).getByLabelText("Image (optional)"), " ghcr.io/owner/tools:1.2 ");
    await user.click(within(dialog).getByRole("button", { name: "Create" }));
    await waitFor(() => expect(onCreated).toHaveBeenCalled());
    const input = (api.calls.find((c) => c.op === "CreatePod")!.vars as { input: Record<string, unknown> }).input;
    expect(input.image).toBe("ghcr.io/owner/tools:1.2");
    expect(input.template).toBeTruthy();
  });

  it("explains a bad name inline and keeps Create disabled", async () => {
    const { user } = setup();
    const name = await screen.findByLabelText("Name");
    await user.type(name, "My_App");
    await user.tab();
    expect(name).toHaveAttribute("aria-invalid", "true");
    expect(name).toHaveAccessibleDescription(/lowercase/i);
    expect(screen.getByRole("button", { name: "Create" })).toBeDisabled();
    await user.clear(name);
    await user.type(name, "my-app");
    expect(name).toHaveAttribute("aria-invalid", "false");
    expect(screen.getByRole("button", { name: "Create" })).toBeEnabled();
  });

  it("validates YAML as you type and shows the problems inline", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      const { api, user } = setup();
      await user.type(await screen.findByLabelText("Name"), "svc");
      await user.click(screen.getByRole("tab", { name: "YAML" }));
      const yaml = screen.getByLabelText("pinacle.yaml");
      await user.type(yaml, "processes:{Enter}  comand: run");
      // debounced: nothing sent for each keystroke
      expect(api.calls.filter((c) => c.op === "ValidateConfig")).toHaveLength(0);
      await act(() => vi.advanceTimersByTimeAsync(450));
      const problems = await screen.findByRole("list", { name: "Problems" });
      expect(problems).toHaveTextContent("2:3 unknown field `comand` (did you mean `command`?)");
      expect(api.calls.filter((c) => c.op === "ValidateConfig")).toHaveLength(1);
      expect(yaml).toHaveAttribute("aria-invalid", "true");
      // the line number is marked
      expect(document.querySelector('[data-line="2"]')).toHaveAttribute("data-problem", "error");
      expect(document.querySelector('[data-line="1"]')).not.toHaveAttribute("data-problem");
      expect(screen.getByRole("button", { name: "Create" })).toBeDisabled();

      await user.clear(yaml);
      await user.type(yaml, "processes:{Enter}  command: run");
      await act(() => vi.advanceTimersByTimeAsync(450));
      await waitFor(() => expect(screen.queryByRole("list", { name: "Problems" })).toBeNull());
      expect(screen.getByRole("button", { name: "Create" })).toBeEnabled();
    } finally {
      vi.useRealTimers();
    }
  });

  it("shows invalid_config details from createPod inline", async () => {
    const { user } = setup({
      CreatePod: () => {
        throw new ApiError(400, "invalid_config", "invalid pinacle.yaml", [
          { ...typo, line: 1, column: 1, message: "unknown service `postgress`", suggestion: "did you mean `postgres`?" },
        ]);
      },
    });
    await user.type(await screen.findByLabelText("Name"), "svc");
    await user.click(screen.getByRole("tab", { name: "YAML" }));
    await user.type(screen.getByLabelText("pinacle.yaml"), "services: [postgress]");
    await waitFor(() => expect(screen.getByRole("button", { name: "Create" })).toBeEnabled());
    await user.click(screen.getByRole("button", { name: "Create" }));
    expect(await screen.findByRole("list", { name: "Problems" })).toHaveTextContent(
      "1:1 unknown service `postgress` (did you mean `postgres`?)",
    );
    expect(screen.getByRole("alert")).toHaveTextContent("The configuration has problems");
  });

  it("creates a pod from a repository and branch", async () => {
    const { api, user, onCreated } = setup();
    await user.click(await screen.findByRole("tab", { name: "Git repository" }));
    expect(screen.getByRole("button", { name: "Create" })).toBeDisabled();
    const url = screen.getByLabelText("Repository URL");
    expect(url).toHaveAccessibleDescription(/GIT_TOKEN/);
    await user.type(url, "https://git.example.com/acme/Shop.git");
    await user.type(screen.getByLabelText("Branch"), "release");
    expect(screen.getByLabelText("Name")).toHaveValue("shop");
    await user.click(screen.getByRole("button", { name: "Create" }));
    await waitFor(() => expect(onCreated).toHaveBeenCalled());
    expect(api.calls.find((c) => c.op === "CreatePod")!.vars).toEqual({
      input: { name: "shop", repository: { url: "https://git.example.com/acme/Shop.git", branch: "release" } },
    });
  });

  it("reads a repository's configuration into the YAML tab", async () => {
    const { api, user } = setup({
      RepositoryConfig: {
        repositoryConfig: { file: ".devcontainer/devcontainer.json", pinacleYaml: "image: rust\n", diagnostics: [] },
      },
    });
    await user.click(await screen.findByRole("tab", { name: "Git repository" }));
    await user.type(screen.getByLabelText("Repository URL"), "https://github.com/acme/Shop.git");
    await user.click(screen.getByRole("button", { name: "Read configuration" }));
    expect(await screen.findByRole("tab", { name: "YAML", selected: true })).toBeInTheDocument();
    expect(screen.getByLabelText("pinacle.yaml")).toHaveValue("image: rust\n");
    expect(screen.getByText(".devcontainer/devcontainer.json")).toBeVisible();
    expect(screen.getByLabelText("Name")).toHaveValue("shop");
    expect(api.calls.find((c) => c.op === "RepositoryConfig")!.vars).toEqual({ url: "https://github.com/acme/Shop.git" });
  });

  describe("from GitHub", () => {
    it("lists the repositories (private ones marked, filtered), loads a branch list and creates with the chosen one", async () => {
      const { api, user, onCreated, requests } = setup({}, configured());
      await user.click(await screen.findByRole("tab", { name: "From GitHub" }));
      const panel = screen.getByRole("tabpanel", { name: "From GitHub" });
      const app = await within(panel).findByRole("radio", { name: /octo\/app/ });
      expect(within(panel).getAllByRole("radio").map((r) => (r as HTMLInputElement).value)).toEqual(["acme/shop", "octo/app", "octo/docs"]);
      expect(app.closest("label")).toHaveTextContent("private");
      expect(within(panel).getByRole("radio", { name: "octo/docs" }).closest("label")).not.toHaveTextContent("private");
      expect(screen.getByRole("button", { name: "Create" })).toBeDisabled();

      await user.type(within(panel).getByLabelText("Filter repositories"), "OCTO");
      expect(within(panel).getAllByRole("radio").map((r) => (r as HTMLInputElement).value)).toEqual(["octo/app", "octo/docs"]);
      await user.type(within(panel).getByLabelText("Filter repositories"), "/nothing");
      expect(within(panel).getByText(/No repository matches/)).toBeInTheDocument();
      await user.clear(within(panel).getByLabelText("Filter repositories"));

      // the name follows the repository chosen, until one is typed
      await user.click(within(panel).getByRole("radio", { name: "octo/docs" }));
      expect(screen.getByLabelText("Name")).toHaveValue("docs");
      await user.click(within(panel).getByRole("radio", { name: /octo\/app/ }));
      // the default branch is chosen at once, the list follows
      const branch = within(panel).getByLabelText("Branch");
      expect(branch).toHaveValue("main");
      await waitFor(() => expect(within(branch).getAllByRole("option").map((o) => o.textContent)).toEqual(["feature/login", "main"]));
      expect(branch).toHaveAccessibleDescription(/At 0123456/);
      expect(screen.getByLabelText("Name")).toHaveValue("app");
      await user.selectOptions(branch, "feature/login");
      expect(within(panel).queryByRole("radiogroup", { name: "Deploy key access" })).toBeNull();

      await user.click(screen.getByRole("button", { name: "Create" }));
      await waitFor(() => expect(onCreated).toHaveBeenCalled());
      expect(api.calls.find((c) => c.op === "CreatePod")!.vars).toEqual({
        input: { name: "app", repository: { github: "octo/app", branch: "feature/login" } },
      });
      expect(requests.map((r) => `${r.method} ${r.path}`)).toEqual([
        "GET /api/v1/github/status",
        "GET /api/v1/github/repositories",
        "GET /api/v1/github/repositories/octo/docs/branches",
        "GET /api/v1/github/repositories/octo/app/branches",
      ]);
    });

    it("registers a deploy key, read-only or read-write", async () => {
      const { api, user, onCreated } = setup({}, configured());
      await user.click(await screen.findByRole("tab", { name: "From GitHub" }));
      await user.click(await screen.findByRole("radio", { name: /octo\/app/ }));
      await user.click(screen.getByRole("checkbox", { name: "Register a deploy key for this pod" }));
      const access = screen.getByRole("radiogroup", { name: "Deploy key access" });
      expect(within(access).getByRole("radio", { name: "Read-only" })).toBeChecked();
      await user.click(within(access).getByRole("radio", { name: /Read-write/ }));
      await user.type(screen.getByLabelText("Name"), "-rw");
      await user.click(screen.getByRole("button", { name: "Create" }));
      await waitFor(() => expect(onCreated).toHaveBeenCalled());
      expect(api.calls.find((c) => c.op === "CreatePod")!.vars).toEqual({
        input: { name: "app-rw", repository: { github: "octo/app", branch: "main", deploy_key: "write" } },
      });
    });

    it("shows why the branches could not be listed, and keeps the default branch", async () => {
      const { api, user, onCreated } = setup(
        {},
        configured({
          "GET /api/v1/github/repositories/octo/docs/branches": jsonResponse(502, { error: { code: "github", message: "GitHub answered 503" } }),
        }),
      );
      await user.click(await screen.findByRole("tab", { name: "From GitHub" }));
      await user.click(await screen.findByRole("radio", { name: "octo/docs" }));
      await waitFor(() => expect(screen.getAllByLabelText("Branch")[1]).toHaveAccessibleDescription(/GitHub answered 503/));
      await user.click(screen.getByRole("checkbox", { name: "Register a deploy key for this pod" }));
      await user.click(screen.getByRole("button", { name: "Create" }));
      await waitFor(() => expect(onCreated).toHaveBeenCalled());
      expect(api.calls.find((c) => c.op === "CreatePod")!.vars).toEqual({
        input: { name: "docs", repository: { github: "octo/docs", branch: "trunk", deploy_key: "read" } },
      });
    });

    it("shows the server's message when the repositories cannot be listed", async () => {
      const { user } = setup(
        {},
        configured({
          "GET /api/v1/github/repositories": jsonResponse(502, { error: { code: "github", message: "the App's key was refused" } }),
        }),
      );
      await user.click(await screen.findByRole("tab", { name: "From GitHub" }));
      expect(await screen.findByRole("alert")).toHaveTextContent("the App's key was refused");
    });

    it("says so and links the App when it reaches no repository", async () => {
      const { user } = setup({}, configured({ "GET /api/v1/github/repositories": { repositories: [] } }));
      await user.click(await screen.findByRole("tab", { name: "From GitHub" }));
      expect(await screen.findByText(/installed on no repository you can reach/)).toBeInTheDocument();
      expect(screen.getByRole("link", { name: "Install the GitHub App" })).toHaveAttribute(
        "href",
        "https://github.com/apps/pinacle/installations/new",
      );
      expect(screen.getByRole("button", { name: "Create" })).toBeDisabled();
    });

    it("offers nothing new when the App is not configured, except its install link", async () => {
      const { user, requests } = setup(
        {},
        { "GET /api/v1/github/status": { app: { configured: false, install_url: "https://github.com/apps/pinacle/installations/new" } } },
      );
      await user.click(await screen.findByRole("tab", { name: "Git repository" }));
      expect(await screen.findByRole("link", { name: "Install the GitHub App" })).toBeVisible();
      expect(screen.queryByRole("tab", { name: "From GitHub" })).toBeNull();
      expect(screen.getAllByRole("tab").map((t) => t.textContent)).toEqual(["Template", "Git repository", "YAML"]);
      expect(requests.map((r) => r.path)).toEqual(["/api/v1/github/status"]);
    });

    it("shows no link either when the App is not configured and has no install address", async () => {
      const { user, requests } = setup({}, { "GET /api/v1/github/status": { app: { configured: false, install_url: null } } });
      await user.click(await screen.findByRole("tab", { name: "Git repository" }));
      await waitFor(() => expect(requests).toHaveLength(1));
      await act(() => Promise.resolve());
      expect(screen.queryByRole("link", { name: "Install the GitHub App" })).toBeNull();
      expect(screen.queryByRole("tab", { name: "From GitHub" })).toBeNull();
    });
  });
});
