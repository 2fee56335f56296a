import { act, fireEvent, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { describe, expect, it, vi } from "vitest";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import type { Layout } from "./tabs";
import { Workspace } from "./Workspace";

const initial: Layout = {
  version: 1,
  active: "a",
  tabs: [
    { id: "a", kind: "terminal", title: "Terminal", session: "s1" },
    { id: "b", kind: "editor", title: "Editor" },
    { id: "c", kind: "url", title: "Docs", url: "https://docs.example.com/" },
  ],
};

function setup(start: Layout = initial) {
  const changes: Layout[] = [];
  const mounts = vi.fn();
  function Harness() {
    const [layout, setLayout] = useState(start);
    return (
      <Workspace
        pod="pod-1"
        layout={layout}
        setLayout={(fn) =>
          setLayout((l) => {
            const next = fn(l);
            changes.push(next);
            return next;
          })
        }
        renderContent={(tab) => {
          mounts(tab.id);
          return <div data-testid={`content-${tab.id}`}>{tab.title} content</div>;
        }}
      />
    );
  }
  const api = fakeApi({});
  const user = userEvent.setup();
  renderWithApi(<Harness />, api);
  const tablist = screen.getByRole("tablist", { name: "Workspace tabs" });
  const titles = () => within(tablist).getAllByRole("tab").map((t) => t.getAttribute("aria-label"));
  const selected = () => within(tablist).getByRole("tab", { selected: true }).getAttribute("aria-label");
  return { user, tablist, titles, selected, changes, mounts };
}

describe("workspace tabs", () => {
  it("lists the tabs and switches by click", async () => {
    const { user, titles, selected } = setup();
    expect(titles()).toEqual(["Terminal", "Editor", "Docs"]);
    expect(selected()).toBe("Terminal");
    await user.click(screen.getByRole("tab", { name: "Docs" }));
    expect(selected()).toBe("Docs");
    expect(screen.getByTestId("content-c")).toBeVisible();
    expect(screen.getByTestId("content-a")).not.toBeVisible();
  });

  it("keeps inactive tabs mounted, created on first show", async () => {
    const { user, mounts } = setup();
    expect(screen.queryByTestId("content-b")).toBeNull(); // never shown yet
    await user.click(screen.getByRole("tab", { name: "Editor" }));
    await user.click(screen.getByRole("tab", { name: "Terminal" }));
    expect(screen.getByTestId("content-b")).toBeInTheDocument();
    expect(screen.getByTestId("content-b")).not.toBeVisible();
    expect(screen.getByTestId("content-a")).toBeVisible();
    expect(new Set(mounts.mock.calls.map((c) => c[0]))).toEqual(new Set(["a", "b"]));
  });

  it("adds a terminal from the + menu and closes tabs with their close button", async () => {
    const { user, titles, selected, changes } = setup();
    await user.click(screen.getByRole("button", { name: "Add tab" }));
    await user.click(screen.getByRole("menuitem", { name: "New terminal" }));
    expect(titles()).toEqual(["Terminal", "Editor", "Docs", "Terminal 2"]);
    expect(selected()).toBe("Terminal 2");
    const added = changes.at(-1)!.tabs.at(-1)!;
    expect(added.kind).toBe("terminal");
    expect(added.session).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(added.session).not.toBe("s1");

    await user.click(screen.getByRole("button", { name: "Close Terminal 2" }));
    await user.click(screen.getByRole("button", { name: "Close Editor" }));
    expect(titles()).toEqual(["Terminal", "Docs"]);
    expect(selected()).toBe("Docs");
  });

  it("adds a preview tab for a port and path", async () => {
    const { user, titles, changes } = setup();
    await user.click(screen.getByRole("button", { name: "Add tab" }));
    await user.click(screen.getByRole("menuitem", { name: "Preview…" }));
    const dialog = screen.getByRole("dialog", { name: "New preview tab" });
    const port = within(dialog).getByLabelText("Port");
    await user.clear(port);
    await user.type(port, "99999");
    await user.click(within(dialog).getByRole("button", { name: "Open preview" }));
    expect(within(dialog).getByRole("alert")).toHaveTextContent("between 1 and 65535");
    await user.clear(port);
    await user.type(port, "5173");
    await user.clear(within(dialog).getByLabelText("Path"));
    await user.type(within(dialog).getByLabelText("Path"), "docs");
    await user.click(within(dialog).getByRole("button", { name: "Open preview" }));
    expect(screen.queryByRole("dialog")).toBeNull();
    expect(titles().at(-1)).toBe("Port 5173");
    expect(changes.at(-1)!.tabs.at(-1)).toMatchObject({ kind: "preview", port: 5173, path: "/docs" });
  });

  it("renames on double-click: Enter commits, Escape cancels", async () => {
    const { user, titles } = setup();
    await user.dblClick(screen.getByRole("tab", { name: "Editor" }));
    const input = screen.getByRole("textbox", { name: "Rename Editor" });
    await user.clear(input);
    await user.type(input, "Code{Enter}");
    expect(titles()).toEqual(["Terminal", "Code", "Docs"]);

    await user.dblClick(screen.getByRole("tab", { name: "Code" }));
    const again = screen.getByRole("textbox", { name: "Rename Code" });
    await user.clear(again);
    await user.type(again, "Nope{Escape}");
    expect(titles()).toEqual(["Terminal", "Code", "Docs"]);
    expect(screen.queryByRole("textbox")).toBeNull();
  });

  it("keyboard shortcuts: Alt+N, Alt+PageDown, Alt+Shift+Arrows, Alt+T, Alt+W", async () => {
    const { titles, selected } = setup();
    const key = (init: KeyboardEventInit) => act(() => void window.dispatchEvent(new KeyboardEvent("keydown", { bubbles: true, cancelable: true, ...init })));
    key({ altKey: true, key: "3", code: "Digit3" });
    expect(selected()).toBe("Docs");
    key({ altKey: true, key: "PageDown", code: "PageDown" });
    expect(selected()).toBe("Terminal"); // wraps
    key({ altKey: true, ctrlKey: true, key: "ArrowLeft", code: "ArrowLeft" });
    expect(selected()).toBe("Docs");
    key({ altKey: true, shiftKey: true, key: "ArrowLeft", code: "ArrowLeft" });
    expect(titles()).toEqual(["Terminal", "Docs", "Editor"]);
    key({ altKey: true, shiftKey: true, key: "ArrowLeft", code: "ArrowLeft" });
    expect(titles()).toEqual(["Docs", "Terminal", "Editor"]);
    key({ altKey: true, key: "t", code: "KeyT" });
    expect(titles()).toEqual(["Docs", "Terminal", "Editor", "Terminal 2"]);
    expect(selected()).toBe("Terminal 2");
    key({ altKey: true, key: "w", code: "KeyW" });
    expect(titles()).toEqual(["Docs", "Terminal", "Editor"]);
    // a plain key is not a shortcut
    key({ key: "w", code: "KeyW" });
    expect(titles()).toHaveLength(3);
  });

  it("arrow keys move between tabs in the tab list", async () => {
    const { user, selected } = setup();
    screen.getByRole("tab", { name: "Terminal" }).focus();
    await user.keyboard("{ArrowRight}");
    expect(selected()).toBe("Editor");
    await user.keyboard("{End}");
    expect(selected()).toBe("Docs");
  });

  it("reorders by drag and drop", () => {
    const { titles } = setup();
    const wrap = (name: string) => screen.getByRole("tab", { name }).parentElement!;
    fireEvent.dragStart(wrap("Docs"));
    fireEvent.dragOver(wrap("Terminal"), { clientX: 0 });
    fireEvent.drop(wrap("Terminal"), { clientX: 0 });
    expect(titles()).toEqual(["Docs", "Terminal", "Editor"]);
  });
});
