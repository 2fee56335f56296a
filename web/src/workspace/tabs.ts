/** The workspace's tab model: pure functions over an immutable Layout, the
 *  shape saved with `saveLayout` and restored from `pod.layout`. */
import type { PodTab } from "../api/types";
import { randomId, safeHttpUrl } from "../lib/format";

export type WorkspaceTabKind = "terminal" | "editor" | "preview" | "url";

export interface WorkspaceTab {
  id: string;
  kind: WorkspaceTabKind;
  title: string;
  /** terminal: the shell session id (re-attach after reload) */
  session?: string;
  /** terminal: the program to run instead of a login shell */
  command?: string;
  /** preview: the port in the pod and the path */
  port?: number;
  path?: string;
  /** url: the outside URL */
  url?: string;
}

export interface Layout {
  version: 1;
  tabs: WorkspaceTab[];
  active: string | null;
}

export const MAX_TITLE = 60;
const KINDS: WorkspaceTabKind[] = ["terminal", "editor", "preview", "url"];
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export const emptyLayout: Layout = { version: 1, tabs: [], active: null };

export function activeTab(l: Layout): WorkspaceTab | null {
  return l.tabs.find((t) => t.id === l.active) ?? null;
}

/** Adds a tab after the active one (or at the end) and activates it. */
export function addTab(l: Layout, tab: WorkspaceTab, opts: { afterActive?: boolean } = {}): Layout {
  if (l.tabs.some((t) => t.id === tab.id)) return { ...l, active: tab.id };
  const tabs = [...l.tabs];
  const ai = l.tabs.findIndex((t) => t.id === l.active);
  const at = opts.afterActive && ai >= 0 ? ai + 1 : tabs.length;
  tabs.splice(at, 0, tab);
  return { ...l, tabs, active: tab.id };
}

/** Removes a tab; closing the active tab activates its right neighbour, or
 *  the left one when it was the last. */
export function closeTab(l: Layout, id: string): Layout {
  const i = l.tabs.findIndex((t) => t.id === id);
  if (i < 0) return l;
  const tabs = l.tabs.filter((t) => t.id !== id);
  let active = l.active;
  if (active === id) active = (tabs[i] ?? tabs[i - 1] ?? null)?.id ?? null;
  return { ...l, tabs, active };
}

/** Renames; a blank title leaves the tab as it was. */
export function renameTab(l: Layout, id: string, title: string): Layout {
  const t = title.replace(/\s+/g, " ").trim().slice(0, MAX_TITLE);
  if (!t) return l;
  return updateTab(l, id, { title: t });
}

export function updateTab(l: Layout, id: string, patch: Partial<Omit<WorkspaceTab, "id">>): Layout {
  let changed = false;
  const tabs = l.tabs.map((t) => {
    if (t.id !== id) return t;
    const next = { ...t, ...patch };
    changed = (Object.keys(patch) as (keyof WorkspaceTab)[]).some((k) => t[k] !== next[k]);
    return next;
  });
  return changed ? { ...l, tabs } : l;
}

/** Moves a tab to index `to` (clamped). */
export function moveTab(l: Layout, id: string, to: number): Layout {
  const from = l.tabs.findIndex((t) => t.id === id);
  if (from < 0) return l;
  const target = Math.max(0, Math.min(l.tabs.length - 1, to));
  if (target === from) return l;
  const tabs = [...l.tabs];
  const [tab] = tabs.splice(from, 1);
  tabs.splice(target, 0, tab!);
  return { ...l, tabs };
}

export function moveTabBy(l: Layout, id: string, delta: number): Layout {
  const from = l.tabs.findIndex((t) => t.id === id);
  if (from < 0) return l;
  return moveTab(l, id, from + delta);
}

export function activateTab(l: Layout, id: string): Layout {
  if (l.active === id || !l.tabs.some((t) => t.id === id)) return l;
  return { ...l, active: id };
}

/** 0-based; out of range leaves the layout as it is. */
export function activateIndex(l: Layout, index: number): Layout {
  const t = l.tabs[index];
  return t ? activateTab(l, t.id) : l;
}

/** Previous (-1) / next (+1) tab, wrapping around. */
export function cycleTab(l: Layout, delta: number): Layout {
  if (l.tabs.length === 0) return l;
  const i = l.tabs.findIndex((t) => t.id === l.active);
  const n = l.tabs.length;
  const next = (((i < 0 ? 0 : i + delta) % n) + n) % n;
  return activateIndex(l, next);
}

/** "Terminal", then "Terminal 2", "Terminal 3", ... */
export function uniqueTitle(base: string, tabs: WorkspaceTab[]): string {
  const taken = new Set(tabs.map((t) => t.title));
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base} ${n}`)) return `${base} ${n}`;
}

export function newTerminalTab(
  tabs: WorkspaceTab[],
  opts: { title?: string; command?: string | null } = {},
  gen: () => string = randomId,
): WorkspaceTab {
  const tab: WorkspaceTab = {
    id: gen(),
    kind: "terminal",
    title: uniqueTitle(opts.title ?? "Terminal", tabs),
    session: gen(),
  };
  if (opts.command) tab.command = opts.command;
  return tab;
}

export function newEditorTab(tabs: WorkspaceTab[], gen: () => string = randomId): WorkspaceTab {
  return { id: gen(), kind: "editor", title: uniqueTitle("Editor", tabs) };
}

export function normalizePreviewPath(path: string | null | undefined): string {
  const p = (path ?? "").trim();
  if (!p) return "/";
  return p.startsWith("/") ? p : `/${p}`;
}

export function newPreviewTab(
  tabs: WorkspaceTab[],
  port: number,
  path?: string | null,
  title?: string,
  gen: () => string = randomId,
): WorkspaceTab {
  return {
    id: gen(),
    kind: "preview",
    title: uniqueTitle(title?.trim() || `Port ${port}`, tabs),
    port,
    path: normalizePreviewPath(path),
  };
}

export function newUrlTab(tabs: WorkspaceTab[], url: string, title?: string, gen: () => string = randomId): WorkspaceTab | null {
  const safe = safeHttpUrl(url);
  if (!safe) return null;
  let fallback = safe;
  try {
    fallback = new URL(safe).host;
  } catch {
    /* keep the URL */
  }
  return { id: gen(), kind: "url", title: uniqueTitle(title?.trim() || fallback, tabs), url: safe };
}

export function isValidPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

/** Tabs for a pod with no saved layout: a terminal, an editor, then the
 *  pod's own tabs (previews of its ports, terminals running a program such
 *  as an AI assistant's CLI, outside links). */
export function defaultLayout(podTabs: PodTab[] | null | undefined, gen: () => string = randomId): Layout {
  let l: Layout = emptyLayout;
  l = addTab(l, newTerminalTab(l.tabs, {}, gen));
  l = addTab(l, newEditorTab(l.tabs, gen));
  for (const pt of podTabs ?? []) {
    let tab: WorkspaceTab | null = null;
    if (pt.kind === "POD" && pt.port != null && isValidPort(pt.port)) {
      tab = newPreviewTab(l.tabs, pt.port, pt.path, pt.name, gen);
    } else if (pt.kind === "TERMINAL" && pt.command) {
      // (a plain shell is already the first tab)
      tab = newTerminalTab(l.tabs, { title: pt.name, command: pt.command }, gen);
    } else if (pt.kind === "EXTERNAL" && pt.url) {
      tab = newUrlTab(l.tabs, pt.url, pt.name, gen);
    }
    if (tab) l = addTab(l, tab);
  }
  return { ...l, active: l.tabs[0]?.id ?? null };
}

/** The JSON saved with saveLayout: known fields only. */
export function serializeLayout(l: Layout): Layout {
  return {
    version: 1,
    active: l.active,
    tabs: l.tabs.map((t) => {
      const o: WorkspaceTab = { id: t.id, kind: t.kind, title: t.title };
      if (t.session !== undefined) o.session = t.session;
      if (t.command !== undefined) o.command = t.command;
      if (t.port !== undefined) o.port = t.port;
      if (t.path !== undefined) o.path = t.path;
      if (t.url !== undefined) o.url = t.url;
      return o;
    }),
  };
}

/** Reads a saved layout defensively: whatever the server kept may have been
 *  written by an older (or newer) app, or edited by hand. Invalid tabs are
 *  dropped; returns null when nothing usable is left (then use defaults).
 *  Accepts the layout as an object or as a JSON string. */
export function deserializeLayout(raw: unknown, gen: () => string = randomId): Layout | null {
  let v = raw;
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  if (!v || typeof v !== "object") return null;
  const o = v as { version?: unknown; tabs?: unknown; active?: unknown };
  if (o.version !== 1 || !Array.isArray(o.tabs)) return null;
  const tabs: WorkspaceTab[] = [];
  const ids = new Set<string>();
  for (const item of o.tabs) {
    const tab = readTab(item, gen);
    if (!tab) continue;
    if (ids.has(tab.id)) tab.id = gen();
    ids.add(tab.id);
    tabs.push(tab);
  }
  if (tabs.length === 0) return null;
  const active = typeof o.active === "string" && ids.has(o.active) ? o.active : tabs[0]!.id;
  return { version: 1, tabs, active };
}

function readTab(item: unknown, gen: () => string): WorkspaceTab | null {
  if (!item || typeof item !== "object") return null;
  const t = item as Record<string, unknown>;
  const kind = t.kind as WorkspaceTabKind;
  if (!KINDS.includes(kind)) return null;
  const id = typeof t.id === "string" && ID_RE.test(t.id) ? t.id : gen();
  const title =
    typeof t.title === "string" && t.title.trim() ? t.title.trim().slice(0, MAX_TITLE) : kind[0]!.toUpperCase() + kind.slice(1);
  const tab: WorkspaceTab = { id, kind, title };
  switch (kind) {
    case "terminal":
      tab.session = typeof t.session === "string" && ID_RE.test(t.session) ? t.session : gen();
      if (typeof t.command === "string" && t.command.trim()) tab.command = t.command;
      break;
    case "preview": {
      const port = typeof t.port === "number" ? t.port : Number(t.port);
      if (!isValidPort(port)) return null;
      tab.port = port;
      tab.path = normalizePreviewPath(typeof t.path === "string" ? t.path : "/");
      break;
    }
    case "url": {
      const url = safeHttpUrl(typeof t.url === "string" ? t.url : null);
      if (!url) return null;
      tab.url = url;
      break;
    }
    case "editor":
      break;
  }
  return tab;
}

export function sameLayout(a: Layout | null, b: Layout | null): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return JSON.stringify(serializeLayout(a)) === JSON.stringify(serializeLayout(b));
}
