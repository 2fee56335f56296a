import { useCallback, useEffect, useRef, useState, type KeyboardEvent } from "react";
import { errorMessage } from "../../api/errors";
import type { FilesApi } from "../../api/files";
import { parentDir } from "../../api/files";
import { visibleNodes, type DirState, type TreeNode } from "./fileTree";

interface Props {
  pod: string;
  files: FilesApi;
  root: string;
  activePath: string | null;
  onOpen: (path: string) => void;
  onNewFile: () => void;
  /** bump to reload a directory (after creating a file in it) */
  invalidate: { dir: string; n: number } | null;
}

/** The pod's files: directories are listed when first expanded. */
export function FileTree({ pod, files, root, activePath, onOpen, onNewFile, invalidate }: Props) {
  const [dirs, setDirs] = useState<Map<string, DirState>>(() => new Map());
  const [expanded, setExpanded] = useState<Set<string>>(() => new Set());
  const [focused, setFocused] = useState<string | null>(null);
  const treeRef = useRef<HTMLDivElement>(null);
  const dirsRef = useRef(dirs);
  dirsRef.current = dirs;

  const load = useCallback(
    async (dir: string) => {
      setDirs((m) => new Map(m).set(dir, { status: "loading", entries: m.get(dir)?.entries ?? [] }));
      try {
        const entries = await files.list(pod, dir);
        setDirs((m) => new Map(m).set(dir, { status: "loaded", entries }));
      } catch (e) {
        setDirs((m) => new Map(m).set(dir, { status: "error", entries: [], error: errorMessage(e) }));
      }
    },
    [files, pod],
  );

  useEffect(() => {
    void load(root);
  }, [load, root]);

  useEffect(() => {
    if (invalidate && dirsRef.current.has(invalidate.dir)) void load(invalidate.dir);
  }, [invalidate, load]);

  const refresh = () => {
    void load(root);
    for (const d of expanded) void load(d);
  };

  const toggle = (node: TreeNode, open?: boolean) => {
    const willOpen = open ?? !node.expanded;
    setExpanded((s) => {
      const next = new Set(s);
      if (willOpen) next.add(node.path);
      else next.delete(node.path);
      return next;
    });
    if (willOpen && (!node.dir || node.dir.status === "error")) void load(node.path);
  };

  const nodes = visibleNodes(root, expanded, dirs);
  const rootState = dirs.get(root);
  const focusPath = focused && nodes.some((n) => n.path === focused) ? focused : (nodes[0]?.path ?? null);

  const focusNode = (path: string) => {
    setFocused(path);
    requestAnimationFrame(() => {
      const rows = treeRef.current?.querySelectorAll<HTMLElement>("[data-path]") ?? [];
      for (const row of rows) if (row.dataset.path === path) row.focus();
    });
  };

  const activate = (n: TreeNode) => {
    if (n.kind === "dir") toggle(n);
    else onOpen(n.path);
  };

  const onKey = (e: KeyboardEvent<HTMLDivElement>, n: TreeNode, i: number) => {
    switch (e.key) {
      case "ArrowDown":
        e.preventDefault();
        if (nodes[i + 1]) focusNode(nodes[i + 1]!.path);
        break;
      case "ArrowUp":
        e.preventDefault();
        if (nodes[i - 1]) focusNode(nodes[i - 1]!.path);
        break;
      case "Home":
        e.preventDefault();
        if (nodes[0]) focusNode(nodes[0].path);
        break;
      case "End":
        e.preventDefault();
        if (nodes.length) focusNode(nodes[nodes.length - 1]!.path);
        break;
      case "ArrowRight":
        e.preventDefault();
        if (n.kind === "dir") {
          if (!n.expanded) toggle(n, true);
          else if (nodes[i + 1]?.level === n.level + 1) focusNode(nodes[i + 1]!.path);
        }
        break;
      case "ArrowLeft":
        e.preventDefault();
        if (n.kind === "dir" && n.expanded) toggle(n, false);
        else if (n.level > 1) focusNode(parentDir(n.path));
        break;
      case "Enter":
      case " ":
        e.preventDefault();
        activate(n);
        break;
    }
  };

  return (
    <div className="filetree">
      <div className="filetree-head">
        <span className="filetree-root" title={root}>
          {root}
        </span>
        <button type="button" className="icon-btn" aria-label="New file" title="New file" onClick={onNewFile}>
          +
        </button>
        <button type="button" className="icon-btn" aria-label="Refresh files" title="Refresh" onClick={refresh}>
          ⟳
        </button>
      </div>
      {rootState?.status === "error" ? (
        <div className="state state-error" role="alert">
          <p>Could not list {root}: {rootState.error}</p>
          <button type="button" className="btn btn-small" onClick={() => void load(root)}>
            Try again
          </button>
        </div>
      ) : !rootState || (rootState.status === "loading" && rootState.entries.length === 0) ? (
        <div className="state state-loading" role="status">
          <span className="spinner" aria-hidden="true" /> Loading files…
        </div>
      ) : nodes.length === 0 ? (
        <p className="muted filetree-empty">{root} is empty.</p>
      ) : (
        <div role="tree" aria-label="Files" className="tree" ref={treeRef}>
          {nodes.map((n, i) => (
            <TreeRow
              key={n.path}
              node={n}
              selected={n.path === activePath}
              focusable={n.path === focusPath}
              onClick={() => {
                setFocused(n.path);
                activate(n);
              }}
              onKeyDown={(e) => onKey(e, n, i)}
            />
          ))}
        </div>
      )}
    </div>
  );
}

function TreeRow({
  node,
  selected,
  focusable,
  onClick,
  onKeyDown,
}: {
  node: TreeNode;
  selected: boolean;
  focusable: boolean;
  onClick: () => void;
  onKeyDown: (e: KeyboardEvent<HTMLDivElement>) => void;
}) {
  const isDir = node.kind === "dir";
  const icon = isDir ? (node.expanded ? "▾" : "▸") : node.kind === "symlink" ? "↪" : "·";
  return (
    <>
      <div
        role="treeitem"
        aria-label={node.name}
        aria-level={node.level}
        aria-setsize={node.size}
        aria-posinset={node.pos}
        aria-expanded={isDir ? node.expanded : undefined}
        aria-selected={selected}
        aria-busy={node.dir?.status === "loading" || undefined}
        tabIndex={focusable ? 0 : -1}
        data-path={node.path}
        className={`tree-row${selected ? " tree-row-selected" : ""}${isDir ? " tree-dir" : ""}`}
        style={{ paddingLeft: `${(node.level - 1) * 14 + 6}px` }}
        onClick={onClick}
        onKeyDown={onKeyDown}
      >
        <span className="tree-icon" aria-hidden="true">
          {icon}
        </span>
        <span className="tree-name">{node.name}</span>
      </div>
      {isDir && node.expanded && node.dir?.status === "error" && (
        <div className="tree-error" style={{ paddingLeft: `${node.level * 14 + 6}px` }}>
          {node.dir.error}
        </div>
      )}
      {isDir && node.expanded && node.dir?.status === "loaded" && node.dir.entries.length === 0 && (
        <div className="tree-empty muted" style={{ paddingLeft: `${node.level * 14 + 6}px` }}>
          empty
        </div>
      )}
    </>
  );
}
