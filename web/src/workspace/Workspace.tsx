import { ErrorBoundary } from "../components/ErrorBoundary";
import { lazy, Suspense, useCallback, useEffect, useId, useRef, useState, type FormEvent } from "react";
import { Dialog } from "../components/Dialog";
import { Loading } from "../components/States";
import { randomId } from "../lib/format";
import type { TabHandle } from "./handles";
import { PreviewView, UrlView } from "./PreviewView";
import { shortcutFor } from "./shortcuts";
import { TabBar } from "./TabBar";
import {
  activateIndex,
  activateTab,
  activeTab,
  addTab,
  closeTab,
  cycleTab,
  isValidPort,
  moveTab,
  moveTabBy,
  newEditorTab,
  newPreviewTab,
  newTerminalTab,
  newUrlTab,
  renameTab,
  updateTab,
  type Layout,
  type WorkspaceTab,
  type WorkspaceTabKind,
} from "./tabs";

const loadTerminalView = () => import("./TerminalView");
const TerminalView = lazy(loadTerminalView);
/** Fetches the terminal's chunk ahead of time (while a pod provisions). */
export function preloadTerminal(): void {
  void loadTerminalView().catch(() => undefined);
}
const EditorPane = lazy(() => import("./editor/EditorPane"));

export interface WorkspaceProps {
  /** the pod's id (what the API calls take) */
  pod: string;
  layout: Layout;
  setLayout: (update: (l: Layout) => Layout) => void;
  /** for tests: render this instead of the lazy terminal / editor */
  renderContent?: (tab: WorkspaceTab, active: boolean) => React.ReactNode;
}

/** The tab bar and the tabs' panels. Each tab's content is created the first
 *  time it is shown and stays mounted (hidden) afterwards, so terminals keep
 *  their screen and editors their buffers. */
export function Workspace({ pod, layout, setLayout, renderContent }: WorkspaceProps) {
  const prefix = useId();
  const tabId = useCallback((id: string) => `${prefix}-tab-${id}`, [prefix]);
  const panelId = useCallback((id: string) => `${prefix}-panel-${id}`, [prefix]);
  const handles = useRef(new Map<string, TabHandle>());
  const seen = useRef(new Set<string>());
  const [adding, setAdding] = useState<"preview" | "url" | null>(null);
  const layoutRef = useRef(layout);
  layoutRef.current = layout;

  if (layout.active) seen.current.add(layout.active);

  const register = useCallback((id: string, h: TabHandle | null) => {
    if (h) handles.current.set(id, h);
    else handles.current.delete(id);
  }, []);

  const close = useCallback(
    (id: string) => {
      const h = handles.current.get(id);
      if (h?.confirmClose && !h.confirmClose()) return;
      h?.terminate?.();
      handles.current.delete(id);
      seen.current.delete(id);
      setLayout((l) => closeTab(l, id));
    },
    [setLayout],
  );

  const add = useCallback(
    (kind: WorkspaceTabKind) => {
      if (kind === "terminal") setLayout((l) => addTab(l, newTerminalTab(l.tabs)));
      else if (kind === "editor") setLayout((l) => addTab(l, newEditorTab(l.tabs)));
      else setAdding(kind);
    },
    [setLayout],
  );

  // Shortcuts work wherever the focus is (terminal and editor included):
  // capture phase, before xterm or CodeMirror see the key.
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const action = shortcutFor(e);
      if (!action) return;
      if (document.querySelector('[aria-modal="true"]')) return;
      e.preventDefault();
      e.stopPropagation();
      const l = layoutRef.current;
      switch (action.type) {
        case "activate-index":
          setLayout((x) => activateIndex(x, action.index));
          break;
        case "prev":
          setLayout((x) => cycleTab(x, -1));
          break;
        case "next":
          setLayout((x) => cycleTab(x, 1));
          break;
        case "move":
          if (l.active) {
            const id = l.active;
            setLayout((x) => moveTabBy(x, id, action.delta));
          }
          break;
        case "new-terminal":
          add("terminal");
          break;
        case "close":
          if (l.active) close(l.active);
          break;
      }
    };
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  }, [add, close, setLayout]);

  // Focus the content of a newly active tab (a terminal takes the keys).
  const active = layout.active;
  useEffect(() => {
    if (!active) return;
    const t = requestAnimationFrame(() => {
      const inTabBar = document.activeElement?.closest('[role="tablist"]');
      if (!inTabBar) handles.current.get(active)?.focus?.();
    });
    return () => cancelAnimationFrame(t);
  }, [active]);

  const restartTerminal = useCallback(
    (id: string) => setLayout((l) => updateTab(l, id, { session: randomId() })),
    [setLayout],
  );

  const content = (t: WorkspaceTab, isActive: boolean) => (
    <ErrorBoundary what={`the tab “${t.title}”`}>{tabContent(t, isActive)}</ErrorBoundary>
  );
  const tabContent = (t: WorkspaceTab, isActive: boolean) => {
    if (renderContent) return renderContent(t, isActive);
    switch (t.kind) {
      case "terminal":
        return (
          <Suspense fallback={<Loading label="Loading terminal…" />}>
            <TerminalView pod={pod} tab={t} active={isActive} register={register} onRestart={restartTerminal} />
          </Suspense>
        );
      case "editor":
        return (
          <Suspense fallback={<Loading label="Loading editor…" />}>
            <EditorPane pod={pod} tabId={t.id} active={isActive} register={register} />
          </Suspense>
        );
      case "preview":
        return <PreviewView pod={pod} tab={t} />;
      case "url":
        return <UrlView tab={t} />;
    }
  };

  const current = activeTab(layout);
  return (
    <div className="workspace">
      <TabBar
        layout={layout}
        tabId={tabId}
        panelId={panelId}
        onActivate={(id) => setLayout((l) => activateTab(l, id))}
        onClose={close}
        onRename={(id, title) => setLayout((l) => renameTab(l, id, title))}
        onMove={(id, to) => setLayout((l) => moveTab(l, id, to))}
        onAdd={add}
      />
      <div className="panels">
        {layout.tabs.length === 0 && (
          <div className="state state-empty">
            <strong>No tabs open</strong>
            <p>Open a terminal, an editor or a preview.</p>
            <div className="button-row">
              <button type="button" className="btn btn-primary" onClick={() => add("terminal")}>
                New terminal
              </button>
              <button type="button" className="btn" onClick={() => add("editor")}>
                Open editor
              </button>
            </div>
          </div>
        )}
        {layout.tabs.map((t) => {
          const isActive = t.id === current?.id;
          return (
            <div
              key={t.id}
              role="tabpanel"
              id={panelId(t.id)}
              aria-labelledby={tabId(t.id)}
              hidden={!isActive}
              className="tabpanel"
            >
              {seen.current.has(t.id) && content(t, isActive)}
            </div>
          );
        })}
      </div>
      {adding === "preview" && (
        <PreviewTabDialog
          onClose={() => setAdding(null)}
          onSubmit={(port, path, title) => {
            setAdding(null);
            setLayout((l) => addTab(l, newPreviewTab(l.tabs, port, path, title)));
          }}
        />
      )}
      {adding === "url" && (
        <UrlTabDialog
          onClose={() => setAdding(null)}
          onSubmit={(tab) => {
            setAdding(null);
            setLayout((l) => addTab(l, tab));
          }}
          tabs={layout.tabs}
        />
      )}
    </div>
  );
}

function PreviewTabDialog({
  onClose,
  onSubmit,
}: {
  onClose: () => void;
  onSubmit: (port: number, path: string, title: string) => void;
}) {
  const id = useId();
  const [port, setPort] = useState("3000");
  const [path, setPath] = useState("/");
  const [title, setTitle] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const n = Number(port);
    if (!isValidPort(n)) {
      setError("Enter a port between 1 and 65535.");
      return;
    }
    onSubmit(n, path, title);
  };
  return (
    <Dialog title="New preview tab" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div className="form-row">
          <div className="field">
            <label htmlFor={`${id}-port`}>Port</label>
            <input
              id={`${id}-port`}
              type="number"
              min={1}
              max={65535}
              value={port}
              aria-invalid={error !== null}
              onChange={(e) => setPort(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor={`${id}-path`}>Path</label>
            <input id={`${id}-path`} value={path} onChange={(e) => setPath(e.target.value)} />
          </div>
        </div>
        <div className="field">
          <label htmlFor={`${id}-title`}>Title (optional)</label>
          <input id={`${id}-title`} value={title} placeholder={`Port ${port}`} onChange={(e) => setTitle(e.target.value)} />
        </div>
        {error && (
          <div role="alert" className="form-error">
            {error}
          </div>
        )}
        <div className="dialog-actions">
          <button type="button" className="btn btn-ghost" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary">
            Open preview
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function UrlTabDialog({
  onClose,
  onSubmit,
  tabs,
}: {
  onClose: () => void;
  onSubmit: (tab: WorkspaceTab) => void;
  tabs: WorkspaceTab[];
}) {
  const id = useId();
  const [url, setUrl] = useState("https://");
  const [title, setTitle] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const tab = newUrlTab(tabs, url, title);
    if (!tab) {
      setError("Enter an http:// or https:// address.");
      return;
    }
    onSubmit(tab);
  };
  return (
    <Dialog title="New URL tab" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div className="field">
          <label htmlFor={`${id}-url`}>URL</label>
          <input id={`${id}-url`} type="url" value={url} aria-invalid={error !== null} onChange={(e) => setUrl(e.target.value)} />
        </div>
        <div className="field">
          <label htmlFor={`${id}-title`}>Title (optional)</label>
          <input id={`${id}-title`} value={title} onChange={(e) => setTitle(e.target.value)} />
        </div>
        {error && (
          <div role="alert" className="form-error">
            {error}
          </div>
        )}
        <div className="dialog-actions">
          <button type="button" className="btn btn-ghost" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary">
            Open
          </button>
        </div>
      </form>
    </Dialog>
  );
}
