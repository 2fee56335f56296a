import { act, cleanup, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { PodDetail } from "../api/types";
import { fakeApi, fakeRest, renderWithApi } from "../test/fakeApi";
import type { Layout } from "../workspace/tabs";
import { WorkspacePage } from "./WorkspacePage";

// xterm needs a real browser; the terminal tab's own behaviour is tested
// through TerminalSocket.
vi.mock("../workspace/TerminalView", () => ({
  default: ({ tab }: { tab: { title: string; session: string; command?: string } }) => (
    <div data-testid="terminal">
      terminal {tab.title} session={tab.session} command={tab.command ?? ""}
    </div>
  ),
}));

const tier = { name: "small", vcpus: 2, memoryBytes: 2 * 1024 ** 3, diskBytes: 10 * 1024 ** 3 };

const pod = (over: Partial<PodDetail> = {}): PodDetail => ({
  id: "pod-uuid",
  name: "web",
  owner: "ann",
  team: null,
  state: "RUNNING",
  stateReason: null,
  template: "node",
  tier,
  createdAt: "2025-01-01T00:00:00Z",
  lastActivityAt: "2025-01-01T00:00:00Z",
  image: "node",
  runtime: "gvisor",
  publicPorts: [],
  tabs: [],
  layout: null,
  sshCommand: "ssh web.ann@pinacle.test -p 2222",
  ...over,
});

const usage = { pod: { id: "pod-uuid", state: "RUNNING", usage: { cpuPercent: 50, memoryBytes: 1024 ** 3, memoryLimitBytes: 2 * 1024 ** 3, diskBytes: 1024 ** 3, diskLimitBytes: 10 * 1024 ** 3 } } };

afterEach(() => vi.useRealTimers());

describe("workspace page", () => {
  it("restores the saved layout and saves changes, debounced", async () => {
    const saved: Layout = {
      version: 1,
      active: "u1",
      tabs: [
        { id: "t1", kind: "terminal", title: "Shell", session: "sess-a" },
        { id: "u1", kind: "url", title: "Docs", url: "https://docs.example.com/" },
      ],
    };
    const api = fakeApi({ Pod: { pod: pod({ layout: saved }) }, PodUsage: usage, SaveLayout: { saveLayout: true } });
    const user = userEvent.setup();
    renderWithApi(<WorkspacePage podKey="web" />, api);
    const tablist = await screen.findByRole("tablist", { name: "Workspace tabs" });
    expect(within(tablist).getAllByRole("tab").map((t) => t.getAttribute("aria-label"))).toEqual(["Shell", "Docs"]);
    expect(screen.getByRole("tab", { name: "Docs" })).toHaveAttribute("aria-selected", "true");
    expect(screen.getByTitle("Page: Docs")).toHaveAttribute("src", "https://docs.example.com/");
    // nothing changed yet: nothing saved
    await new Promise((r) => setTimeout(r, 600));
    expect(api.calls.filter((c) => c.op === "SaveLayout")).toHaveLength(0);

    await user.click(screen.getByRole("tab", { name: "Shell" }));
    expect(await screen.findByTestId("terminal")).toHaveTextContent("session=sess-a");
    await user.dblClick(screen.getByRole("tab", { name: "Shell" }));
    await user.clear(screen.getByRole("textbox", { name: "Rename Shell" }));
    await user.type(screen.getByRole("textbox", { name: "Rename Shell" }), "Build{Enter}");
    const saves = () => api.calls.filter((c) => c.op === "SaveLayout");
    await waitFor(() => expect(JSON.stringify(saves().at(-1)?.vars)).toContain('"Build"'), { timeout: 2000 });
    // one save per pause, not one per change
    expect(saves().length).toBeLessThanOrEqual(2);
    expect(saves().at(-1)!.vars).toEqual({
      pod: "pod-uuid",
      layout: {
        version: 1,
        active: "t1",
        tabs: [
          { id: "t1", kind: "terminal", title: "Build", session: "sess-a" },
          { id: "u1", kind: "url", title: "Docs", url: "https://docs.example.com/" },
        ],
      },
    });
  });

  it("keeps a change the server has not confirmed across a reload, saves it again, then forgets it", async () => {
    const saved: Layout = { version: 1, active: "t1", tabs: [{ id: "t1", kind: "terminal", title: "Shell", session: "sess-a" }] };
    // the first save never answers: the page is reloaded while it is in flight
    let confirm: (v: unknown) => void = () => undefined;
    let answered = false;
    const api = fakeApi({
      Pod: { pod: pod({ layout: saved }) },
      PodUsage: usage,
      SaveLayout: () =>
        answered
          ? { saveLayout: true }
          : new Promise((r) => {
              confirm = r;
            }),
    });
    const user = userEvent.setup();
    const first = renderWithApi(<WorkspacePage podKey="web" />, api);
    await user.dblClick(await screen.findByRole("tab", { name: "Shell" }));
    await user.clear(screen.getByRole("textbox", { name: "Rename Shell" }));
    await user.type(screen.getByRole("textbox", { name: "Rename Shell" }), "Build{Enter}");
    const saves = () => api.calls.filter((c) => c.op === "SaveLayout");
    await waitFor(() => expect(saves()).toHaveLength(1), { timeout: 2000 });
    first.unmount();

    // the server still has the old layout; this browser tab still shows the change
    renderWithApi(<WorkspacePage podKey="web" />, api);
    const tablist = await screen.findByRole("tablist", { name: "Workspace tabs" });
    expect(within(tablist).getAllByRole("tab").map((t) => t.getAttribute("aria-label"))).toEqual(["Build"]);
    answered = true;
    await waitFor(() => expect(saves()).toHaveLength(2), { timeout: 2000 });
    expect(JSON.stringify(saves()[1]!.vars)).toContain('"Build"');
    await waitFor(() => expect(sessionStorage.length).toBe(0));
    confirm({ saveLayout: true });
  });

  it("without a saved layout opens the default tabs and saves them (so terminals re-attach after reload)", async () => {
    const api = fakeApi({
      Pod: {
        pod: pod({
          tabs: [
            { name: "App", kind: "POD", port: 3000, path: "/" },
            { name: "Claude", kind: "TERMINAL", command: "claude" },
          ],
        }),
      },
      PodUsage: usage,
      SaveLayout: { saveLayout: true },
    });
    renderWithApi(<WorkspacePage podKey="web" />, api);
    const tablist = await screen.findByRole("tablist", { name: "Workspace tabs" });
    expect(within(tablist).getAllByRole("tab").map((t) => t.getAttribute("aria-label"))).toEqual(["Terminal", "Editor", "App", "Claude"]);
    await waitFor(() => expect(api.calls.some((c) => c.op === "SaveLayout")).toBe(true), { timeout: 2000 });
    const layout = api.calls.find((c) => c.op === "SaveLayout")!.vars.layout as Layout;
    expect(layout.tabs[3]).toMatchObject({ kind: "terminal", title: "Claude", command: "claude" });
    expect(layout.tabs[0]!.session).toBeTruthy();
    expect(screen.getByTestId("terminal")).toHaveTextContent(`session=${layout.tabs[0]!.session}`);
  });

  it("shows provisioning with the event log, then the workspace once running", async () => {
    const api = fakeApi({
      Pod: { pod: pod({ state: "PROVISIONING", layout: { version: 1, active: "u", tabs: [{ id: "u", kind: "url", title: "Site", url: "https://x.test/" }] } }) },
      PodUsage: usage,
      SaveLayout: { saveLayout: true },
    });
    renderWithApi(<WorkspacePage podKey="web" />, api);
    expect(await screen.findByRole("heading", { name: /Provisioning/ })).toBeInTheDocument();
    expect(screen.queryByRole("tablist", { name: "Workspace tabs" })).toBeNull();
    // (the subscription starts in an effect, which may run after the heading shows)
    await waitFor(() => expect(api.calls.find((c) => c.op === "PodEvents")?.vars).toEqual({ pod: "pod-uuid", after: null }));
    act(() =>
      api.emit("PodEvents", {
        podEvents: { seq: 1, podId: "pod-uuid", at: "2025-01-01T00:00:01Z", event: "provision_started", from: "PENDING", to: "PROVISIONING", message: "pulling image node" },
      }),
    );
    expect(screen.getByRole("log", { name: "Pod events" })).toHaveTextContent("pulling image node");
    // an image pull's progress: the latest step shows, without a state change
    act(() =>
      api.emit("PodEvents", {
        podEvents: { seq: 2, podId: "pod-uuid", at: "2025-01-01T00:00:02Z", event: "progress", from: "PROVISIONING", to: "PROVISIONING", message: "downloading layer 2/3 (27.0 MiB)" },
      }),
    );
    expect(screen.getByRole("status", { name: "Progress" })).toHaveTextContent("downloading layer 2/3 (27.0 MiB)");
    expect(screen.getByRole("log", { name: "Pod events" }).textContent).not.toMatch(/Provisioning → Provisioning/);
    // another pod's update changes nothing
    act(() => api.emit("PodUpdates", { podUpdates: { ...pod({ id: "other", state: "RUNNING" }) } }));
    expect(screen.queryByRole("tablist", { name: "Workspace tabs" })).toBeNull();
    act(() => api.emit("PodUpdates", { podUpdates: { ...pod({ state: "RUNNING" }) } }));
    expect(await screen.findByRole("tablist", { name: "Workspace tabs" })).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Stop" })).toBeEnabled();
    expect(await screen.findByRole("meter", { name: "Memory" })).toHaveAttribute("aria-valuenow", "50");
    expect(screen.getByRole("meter", { name: "CPU" })).toHaveAttribute("aria-valuenow", "25");
  });

  it("deletes only after the pod name is typed", async () => {
    window.history.replaceState(null, "", "/pods/web");
    const api = fakeApi({
      Pod: { pod: pod({ state: "STOPPED", layout: null }) },
      DeletePod: { deletePod: { id: "pod-uuid", state: "DELETING" } },
    });
    const user = userEvent.setup();
    renderWithApi(<WorkspacePage podKey="web" />, api);
    await user.click(await screen.findByRole("button", { name: "Delete" }));
    const dialog = screen.getByRole("dialog", { name: "Delete pod" });
    const confirm = within(dialog).getByRole("button", { name: "Delete pod" });
    expect(confirm).toBeDisabled();
    await user.type(within(dialog).getByLabelText("Type the pod name to confirm"), "wep");
    expect(confirm).toBeDisabled();
    await user.clear(within(dialog).getByLabelText("Type the pod name to confirm"));
    await user.type(within(dialog).getByLabelText("Type the pod name to confirm"), "web");
    await user.click(confirm);
    await waitFor(() => expect(window.location.pathname).toBe("/"));
    expect(api.calls.find((c) => c.op === "DeletePod")!.vars).toEqual({ id: "pod-uuid" });
  });

  it("offers the SSH command", async () => {
    const api = fakeApi({ Pod: { pod: pod({ state: "STOPPED" }) } });
    const user = userEvent.setup();
    renderWithApi(<WorkspacePage podKey="web" />, api);
    await user.click(await screen.findByRole("button", { name: "SSH" }));
    const dialog = screen.getByRole("dialog", { name: "SSH into this pod" });
    expect(within(dialog).getByLabelText("SSH command")).toHaveTextContent("ssh web.ann@pinacle.test -p 2222");
    expect(within(dialog).getByRole("button", { name: "Copy SSH command" })).toBeInTheDocument();
  });

  it("shows the repository, pull request and a branch that moved on in the header, only when set", async () => {
    const github = { repository: "octo/app", pull_request: 12, head_sha: "2".repeat(40), behind: null, deploy_key: false };
    const api = fakeApi({ Pod: { pod: pod({ state: "STOPPED" }) } });
    const requests = fakeRest(api, { "GET /api/v1/pods/pod-uuid": { id: "pod-uuid", name: "web", github } });
    renderWithApi(<WorkspacePage podKey="web" />, api);
    const header = await screen.findByRole("banner");
    expect(await within(header).findByText("PR #12")).toBeInTheDocument();
    expect(within(header).getByText("octo/app")).toBeInTheDocument();
    expect(within(header).queryByText(/behind origin/)).toBeNull();
    expect(requests.map((r) => r.path)).toEqual(["/api/v1/pods/pod-uuid"]);

    const behind = fakeApi({ Pod: { pod: pod({ state: "STOPPED" }) } });
    fakeRest(behind, {
      "GET /api/v1/pods/pod-uuid": {
        id: "pod-uuid",
        github: { ...github, pull_request: null, behind: { sha: "9876543210".repeat(4), since: "2026-05-01T10:00:00Z" } },
      },
    });
    cleanup();
    renderWithApi(<WorkspacePage podKey="web" />, behind);
    expect(await screen.findByText("behind origin: new commits at 9876543")).toBeInTheDocument();
    expect(screen.queryByText(/^PR #/)).toBeNull();
  });
});
