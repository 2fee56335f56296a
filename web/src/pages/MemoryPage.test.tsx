import { fireEvent, screen, waitFor } from "@testing-library/react";
import { beforeEach, describe, expect, it, vi } from "vitest";
import type { Memory, MemoryProject } from "../api/memory";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import { MemoryPage } from "./MemoryPage";

const mem = (over: Partial<Memory>): Memory => ({
  id: "m1",
  version: 1,
  layer: "semantic",
  content: "staging runs on port 5433",
  metadata: {},
  content_hash: "ab".repeat(32),
  embedder: "hash-v1-384",
  created_at: Date.now(),
  occurred_at: Date.now(),
  current: true,
  ...over,
});

function project(over: Partial<MemoryProject> = {}): MemoryProject {
  return {
    project: "github.com/acme/shop",
    role: "editor",
    list: vi.fn(async (layers: string[]) => ({
      memories: layers.includes("procedural") ? [mem({ id: "p1", layer: "procedural", content: "deploy with make release" })] : [mem({})],
    })),
    search: vi.fn(async () => [{ memory: mem({ id: "m2", content: "the staging database" }), score: 0.03, similarity: 0.812 }]),
    history: vi.fn(async () => ({
      id: "m1",
      versions: [mem({ version: 1, current: false, content: "staging runs on port 5432" }), mem({ version: 2 })],
      changes: [
        { seq: 1, record: { at: 1, actor: "pod:p", action: "add", memory_id: "m1", version: 1 }, prev_hash: "0", hash: "1" },
        { seq: 2, record: { at: 2, actor: "user:u", action: "update", memory_id: "m1", version: 2 }, prev_hash: "1", hash: "2" },
      ],
    })),
    verify: vi.fn(async (log: "events" | "changelog") =>
      log === "changelog"
        ? { log, ok: false, entries: 3, broken_at: 2, reason: "its content does not match its hash" }
        : { log, ok: true, entries: 9, head: "f".repeat(64) },
    ),
    ...over,
  };
}

describe("MemoryPage", () => {
  beforeEach(() => window.history.replaceState(null, "", "/memory"));

  it("opens a project, browses by layer, searches, shows a history and a broken chain", async () => {
    const p = project();
    const open = vi.fn(async () => p);
    const api = fakeApi({}, undefined, { open });
    renderWithApi(<MemoryPage />, api);
    fireEvent.change(screen.getByLabelText("Project"), { target: { value: "github.com/acme/shop" } });
    fireEvent.click(screen.getByRole("button", { name: "Open" }));
    await screen.findByText("staging runs on port 5433");
    expect(open).toHaveBeenCalledWith("github.com/acme/shop", undefined);

    fireEvent.click(screen.getByRole("tab", { name: "procedural" }));
    await screen.findByText("deploy with make release");
    expect(p.list).toHaveBeenLastCalledWith(["procedural"], undefined);

    fireEvent.click(screen.getByRole("tab", { name: "all" }));
    fireEvent.change(screen.getByLabelText("Search"), { target: { value: "staging db" } });
    fireEvent.click(screen.getByRole("button", { name: "Search" }));
    await screen.findByText("the staging database");
    expect(screen.getByText("0.812")).toBeTruthy();

    fireEvent.click(screen.getByText("the staging database"));
    await screen.findByText("staging runs on port 5432");
    expect(screen.getByText(/update by user:u/)).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: "Verify chains" }));
    const alert = await screen.findByText(/broken at entry 2/);
    expect(alert.closest("li")?.textContent).toContain("its content does not match its hash");
    expect(screen.getByText(/intact: 9 entries/)).toBeTruthy();
  });

  it("says why a project cannot be opened, and asks for one", async () => {
    const api = fakeApi({}, undefined, {
      open: vi.fn(async () => {
        throw new Error("no such team");
      }),
    });
    renderWithApi(<MemoryPage />, api);
    fireEvent.click(screen.getByRole("button", { name: "Open" }));
    expect((await screen.findByRole("alert")).textContent).toMatch(/Name a project/);
    fireEvent.change(screen.getByLabelText("Project"), { target: { value: "x" } });
    fireEvent.change(screen.getByLabelText("Team (optional)"), { target: { value: "ghost" } });
    fireEvent.click(screen.getByRole("button", { name: "Open" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/no such team/));
  });
});
