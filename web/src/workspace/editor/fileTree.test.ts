import { describe, expect, it } from "vitest";
import type { FileEntry } from "../../api/files";
import { visibleNodes, type DirState } from "./fileTree";
import { languageKey } from "./languages";

const dir = (name: string): FileEntry => ({ name, kind: "dir", size: 0 });
const file = (name: string): FileEntry => ({ name, kind: "file", size: 1 });
const loaded = (...entries: FileEntry[]): DirState => ({ status: "loaded", entries });

describe("file tree", () => {
  it("shows the children of expanded directories only, depth first", () => {
    const dirs = new Map<string, DirState>([
      ["/workspace", loaded(dir("src"), dir("docs"), file("README.md"))],
      ["/workspace/src", loaded(dir("lib"), file("main.py"))],
      ["/workspace/src/lib", loaded(file("util.py"))],
      ["/workspace/docs", loaded(file("index.md"))],
    ]);
    const rows = (expanded: string[]) =>
      visibleNodes("/workspace", new Set(expanded), dirs).map((n) => `${"  ".repeat(n.level - 1)}${n.name}`);
    expect(rows([])).toEqual(["src", "docs", "README.md"]);
    expect(rows(["/workspace/src"])).toEqual(["src", "  lib", "  main.py", "docs", "README.md"]);
    expect(rows(["/workspace/src", "/workspace/src/lib"])).toEqual(["src", "  lib", "    util.py", "  main.py", "docs", "README.md"]);
    // a collapsed parent hides an expanded child
    expect(rows(["/workspace/src/lib"])).toEqual(["src", "docs", "README.md"]);
    const n = visibleNodes("/workspace", new Set(["/workspace/src"]), dirs)[2]!;
    expect(n).toMatchObject({ path: "/workspace/src/main.py", level: 2, pos: 2, size: 2, kind: "file" });
  });

  it("picks the language from the file name", () => {
    expect(languageKey("/w/a.tsx")).toBe("tsx");
    expect(languageKey("/w/x.PY")).toBe("py");
    expect(languageKey("/w/pinacle.yaml")).toBe("yaml");
    expect(languageKey("/w/Makefile")).toBeNull();
    expect(languageKey("/w/.bashrc")).toBeNull();
    expect(languageKey("/w/Cargo.lock")).toBeNull();
    expect(languageKey("/w/lib.rs")).toBe("rs");
  });
});
