import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { EditorView } from "@codemirror/view";
import { describe, expect, it, vi } from "vitest";
import { FileConflictError, type FileEntry } from "../../api/files";
import { fakeApi, renderWithApi } from "../../test/fakeApi";
import EditorPane from "./EditorPane";

const entries: Record<string, FileEntry[]> = {
  "/workspace": [
    { name: "src", kind: "dir", size: 0 },
    { name: "README.md", kind: "file", size: 5 },
  ],
  "/workspace/src": [{ name: "app.py", kind: "file", size: 12 }],
};

function setup() {
  let disk = "print('hi')\n";
  let etag = '"e1"';
  const files = {
    list: vi.fn(async (_pod: string, path: string) => entries[path] ?? []),
    read: vi.fn(async () => ({ text: disk, bytes: new TextEncoder().encode(disk), etag })),
    write: vi.fn(async (_pod: string, _path: string, text: string, cond: unknown) => {
      if (cond !== "force" && typeof cond === "object" && cond && "ifMatch" in cond && (cond as { ifMatch: string }).ifMatch !== etag)
        throw new FileConflictError("changed");
      disk = text;
      etag = `"e${Number(etag.slice(2, -1)) + 1}"`;
      return etag;
    }),
  };
  const api = fakeApi({}, files);
  const user = userEvent.setup();
  renderWithApi(<EditorPane pod="pod-1" tabId="ed" active register={() => undefined} />, api);
  const changeOnDisk = (text: string) => {
    disk = text;
    etag = '"other"';
  };
  return { user, files, changeOnDisk, disk: () => disk };
}

function typeInEditor(text: string) {
  const dom = document.querySelector(".cm-editor") as HTMLElement;
  const view = EditorView.findFromDOM(dom)!;
  act(() => view.dispatch({ changes: { from: view.state.doc.length, insert: text } }));
}

describe("editor", () => {
  it("lists /workspace lazily and opens a file", async () => {
    const { user, files } = setup();
    const tree = await screen.findByRole("tree", { name: "Files" });
    expect(within(tree).getAllByRole("treeitem").map((t) => t.getAttribute("aria-label"))).toEqual(["src", "README.md"]);
    expect(files.list).toHaveBeenCalledTimes(1);
    await user.click(within(tree).getByRole("treeitem", { name: "src" }));
    expect(await within(tree).findByRole("treeitem", { name: "app.py" })).toHaveAttribute("aria-level", "2");
    expect(within(tree).getByRole("treeitem", { name: "src" })).toHaveAttribute("aria-expanded", "true");
    expect(files.list).toHaveBeenLastCalledWith("pod-1", "/workspace/src");
    await user.click(within(tree).getByRole("treeitem", { name: "app.py" }));
    expect(await screen.findByRole("tab", { name: "app.py" })).toHaveAttribute("aria-selected", "true");
    expect(files.read).toHaveBeenCalledWith("pod-1", "/workspace/src/app.py");
    expect(document.querySelector(".cm-content")).toHaveTextContent("print('hi')");
  });

  it("marks edits, saves with If-Match, and warns when the file changed on disk", async () => {
    const { user, files, changeOnDisk, disk } = setup();
    await user.click(await screen.findByRole("treeitem", { name: "README.md" }));
    await screen.findByRole("tab", { name: "README.md" });
    expect(screen.getByRole("button", { name: "Save" })).toBeDisabled();

    typeInEditor("more\n");
    const tab = screen.getByRole("tab", { name: "README.md, modified" });
    expect(tab).toHaveTextContent("● README.md");

    await user.click(screen.getByRole("button", { name: "Save" }));
    await waitFor(() => expect(screen.getByRole("tab", { name: "README.md" })).toHaveTextContent(/^README\.md$/));
    expect(files.write).toHaveBeenLastCalledWith("pod-1", "/workspace/README.md", "print('hi')\nmore\n", { ifMatch: '"e1"' });
    expect(disk()).toBe("print('hi')\nmore\n");

    // someone else writes the file; our next save is refused
    changeOnDisk("theirs\n");
    typeInEditor("mine\n");
    await user.keyboard("{Control>}s{/Control}");
    const banner = await screen.findByRole("alert");
    expect(banner).toHaveTextContent("changed on disk");
    expect(files.write).toHaveBeenLastCalledWith("pod-1", "/workspace/README.md", "print('hi')\nmore\nmine\n", { ifMatch: '"e2"' });
    expect(disk()).toBe("theirs\n");

    // Reload: drop our edits, take theirs
    await user.click(within(banner).getByRole("button", { name: "Reload" }));
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    expect(document.querySelector(".cm-content")).toHaveTextContent("theirs");
    expect(screen.getByRole("tab", { name: "README.md" })).toBeInTheDocument();
  });

  it("Overwrite saves without If-Match", async () => {
    const { user, files, changeOnDisk, disk } = setup();
    await user.click(await screen.findByRole("treeitem", { name: "README.md" }));
    await screen.findByRole("tab", { name: "README.md" });
    changeOnDisk("theirs\n");
    typeInEditor("mine\n");
    await user.click(screen.getByRole("button", { name: "Save" }));
    await user.click(within(await screen.findByRole("alert")).getByRole("button", { name: "Overwrite" }));
    await waitFor(() => expect(screen.queryByRole("alert")).toBeNull());
    expect(files.write).toHaveBeenLastCalledWith("pod-1", "/workspace/README.md", "print('hi')\nmine\n", "force");
    expect(disk()).toBe("print('hi')\nmine\n");
  });

  it("creates a new file with If-None-Match: *", async () => {
    const { user, files } = setup();
    await screen.findByRole("tree", { name: "Files" });
    await user.click(screen.getAllByRole("button", { name: "New file" })[0]!);
    const dialog = screen.getByRole("dialog", { name: "New file" });
    await user.type(within(dialog).getByLabelText("File path"), "src/new.py");
    await user.click(within(dialog).getByRole("button", { name: "Create" }));
    expect(await screen.findByRole("tab", { name: "new.py" })).toBeInTheDocument();
    expect(files.write).toHaveBeenCalledWith("pod-1", "/workspace/src/new.py", "", { ifNoneMatch: "*" });
  });
});
