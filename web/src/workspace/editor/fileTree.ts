import type { EntryKind, FileEntry } from "../../api/files";
import { joinPath } from "../../api/files";

export interface DirState {
  status: "loading" | "loaded" | "error";
  entries: FileEntry[];
  error?: string;
}

export interface TreeNode {
  path: string;
  name: string;
  kind: EntryKind;
  level: number;
  expanded: boolean;
  /** for directories: their listing's state, if asked for */
  dir?: DirState;
  /** position among its siblings (1-based) and their count */
  pos: number;
  size: number;
}

/** The rows a tree shows: the children of `root`, and recursively those of
 *  expanded directories, depth first. */
export function visibleNodes(root: string, expanded: ReadonlySet<string>, dirs: ReadonlyMap<string, DirState>): TreeNode[] {
  const out: TreeNode[] = [];
  const walk = (dir: string, level: number, seen: Set<string>) => {
    const state = dirs.get(dir);
    if (!state) return;
    const entries = state.entries;
    entries.forEach((e, i) => {
      const path = joinPath(dir, e.name);
      const isDir = e.kind === "dir";
      const open = isDir && expanded.has(path);
      out.push({
        path,
        name: e.name,
        kind: e.kind,
        level,
        expanded: open,
        dir: isDir ? dirs.get(path) : undefined,
        pos: i + 1,
        size: entries.length,
      });
      if (open && !seen.has(path)) walk(path, level + 1, new Set(seen).add(path));
    });
  };
  walk(root, 1, new Set([root]));
  return out;
}
