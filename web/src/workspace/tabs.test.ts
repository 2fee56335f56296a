import { describe, expect, it } from "vitest";
import type { PodTab } from "../api/types";
import {
  activateIndex,
  addTab,
  closeTab,
  cycleTab,
  defaultLayout,
  deserializeLayout,
  emptyLayout,
  moveTab,
  moveTabBy,
  newTerminalTab,
  renameTab,
  serializeLayout,
  uniqueTitle,
  type Layout,
  type WorkspaceTab,
} from "./tabs";

function ids() {
  let n = 0;
  return () => `id${++n}`;
}

const tab = (id: string, title = id): WorkspaceTab => ({ id, kind: "editor", title });
const layoutOf = (...names: string[]): Layout => ({ version: 1, tabs: names.map((n) => tab(n)), active: names[0] ?? null });
const order = (l: Layout) => l.tabs.map((t) => t.id).join(",");

describe("tab model", () => {
  it("adds a tab at the end and activates it", () => {
    const l = addTab(layoutOf("a", "b"), tab("c"));
    expect(order(l)).toBe("a,b,c");
    expect(l.active).toBe("c");
  });

  it("closing the active tab activates its right neighbour, or the left one at the end", () => {
    let l: Layout = { ...layoutOf("a", "b", "c"), active: "b" };
    l = closeTab(l, "b");
    expect(order(l)).toBe("a,c");
    expect(l.active).toBe("c");
    l = closeTab(l, "c");
    expect(l.active).toBe("a");
    l = closeTab(l, "a");
    expect(l.tabs).toHaveLength(0);
    expect(l.active).toBeNull();
  });

  it("closing an inactive tab keeps the active one", () => {
    const l = closeTab({ ...layoutOf("a", "b", "c"), active: "c" }, "a");
    expect(l.active).toBe("c");
  });

  it("renames, trimming; a blank title changes nothing", () => {
    const l = renameTab(layoutOf("a"), "a", "  Build   logs ");
    expect(l.tabs[0]!.title).toBe("Build logs");
    expect(renameTab(l, "a", "   ")).toBe(l);
    expect(renameTab(l, "a", "x".repeat(100)).tabs[0]!.title).toHaveLength(60);
  });

  it("moves tabs, clamped to the ends", () => {
    const l = layoutOf("a", "b", "c", "d");
    expect(order(moveTab(l, "a", 2))).toBe("b,c,a,d");
    expect(order(moveTab(l, "d", 0))).toBe("d,a,b,c");
    expect(order(moveTab(l, "b", 99))).toBe("a,c,d,b");
    expect(order(moveTabBy(l, "a", -1))).toBe("a,b,c,d");
    expect(order(moveTabBy(l, "c", 1))).toBe("a,b,d,c");
  });

  it("switches by index and cycles with wrap-around", () => {
    const l = layoutOf("a", "b", "c");
    expect(activateIndex(l, 2).active).toBe("c");
    expect(activateIndex(l, 8).active).toBe("a"); // out of range: unchanged
    expect(cycleTab(l, -1).active).toBe("c");
    expect(cycleTab(cycleTab(l, 1), 1).active).toBe("c");
    expect(cycleTab({ ...l, active: "c" }, 1).active).toBe("a");
  });

  it("numbers new titles", () => {
    const tabs = [tab("1", "Terminal"), tab("2", "Terminal 2")];
    expect(uniqueTitle("Terminal", tabs)).toBe("Terminal 3");
    expect(uniqueTitle("Editor", tabs)).toBe("Editor");
    const t = newTerminalTab(tabs, {}, ids());
    expect(t).toMatchObject({ kind: "terminal", title: "Terminal 3", id: "id1", session: "id2" });
  });
});

describe("default layout from pod.tabs", () => {
  it("a terminal, an editor, then previews, command terminals and links", () => {
    const podTabs: PodTab[] = [
      { name: "App", kind: "POD", port: 3000, path: "/" },
      { name: "Claude", kind: "TERMINAL", command: "claude" },
      { name: "Terminal", kind: "TERMINAL" },
      { name: "Docs", kind: "EXTERNAL", url: "https://docs.example.com/" },
      { name: "Evil", kind: "EXTERNAL", url: "javascript:alert(1)" },
      { name: "Broken", kind: "POD", port: 0 },
    ];
    const l = defaultLayout(podTabs, ids());
    expect(l.tabs.map((t) => [t.kind, t.title])).toEqual([
      ["terminal", "Terminal"],
      ["editor", "Editor"],
      ["preview", "App"],
      ["terminal", "Claude"],
      ["url", "Docs"],
    ]);
    expect(l.tabs[2]).toMatchObject({ port: 3000, path: "/" });
    expect(l.tabs[3]).toMatchObject({ command: "claude" });
    expect(l.tabs[0]!.session).toBeTruthy();
    expect(l.tabs[3]!.session).not.toBe(l.tabs[0]!.session);
    expect(l.active).toBe(l.tabs[0]!.id);
  });
});

describe("layout serialization", () => {
  it("round-trips through JSON, keeping terminal sessions", () => {
    let l = defaultLayout([{ name: "Web", kind: "POD", port: 8080, path: "api" }], ids());
    l = renameTab(l, l.tabs[0]!.id, "Shell");
    l = moveTab(l, l.tabs[2]!.id, 0);
    l = { ...l, active: l.tabs[1]!.id };
    const json = JSON.stringify(serializeLayout(l));
    const back = deserializeLayout(JSON.parse(json));
    expect(back).toEqual(l);
    expect(back!.tabs.find((t) => t.title === "Shell")!.session).toBe(l.tabs[1]!.session);
    expect(back!.tabs[0]).toMatchObject({ kind: "preview", port: 8080, path: "/api" });
    // also from the JSON string itself
    expect(deserializeLayout(json)).toEqual(l);
  });

  it("drops what it cannot use and repairs the rest", () => {
    const raw = {
      version: 1,
      active: "gone",
      tabs: [
        { id: "t1", kind: "terminal", title: "T", session: "bad session id!" },
        { id: "t1", kind: "editor", title: "dup id" },
        { id: "p", kind: "preview", title: "P", port: 70000 },
        { id: "u", kind: "url", title: "U", url: "javascript:alert(1)" },
        { id: "x", kind: "spreadsheet", title: "X" },
        "garbage",
        { id: "e", kind: "editor" },
      ],
    };
    const l = deserializeLayout(raw, ids())!;
    expect(l.tabs.map((t) => t.kind)).toEqual(["terminal", "editor", "editor"]);
    expect(l.tabs[0]!.session).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(l.tabs[0]!.session).not.toBe("bad session id!");
    expect(new Set(l.tabs.map((t) => t.id)).size).toBe(3);
    expect(l.tabs[2]!.title).toBe("Editor");
    expect(l.active).toBe("t1");
  });

  it("rejects what is not a layout", () => {
    expect(deserializeLayout(null)).toBeNull();
    expect(deserializeLayout("{not json")).toBeNull();
    expect(deserializeLayout({ version: 2, tabs: [] })).toBeNull();
    expect(deserializeLayout({ version: 1, tabs: [] })).toBeNull();
    expect(deserializeLayout(emptyLayout)).toBeNull();
  });
});
