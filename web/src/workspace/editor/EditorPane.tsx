import { useCallback, useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useApi } from "../../api/context";
import { errorMessage } from "../../api/errors";
import { FileConflictError, WORKSPACE, baseName, parentDir, resolveUserPath } from "../../api/files";
import { Dialog } from "../../components/Dialog";
import { useToasts } from "../../components/Toasts";
import type { TabHandle } from "../handles";
import {
  activateBuffer,
  anyDirty,
  beginSave,
  bufferAriaLabel,
  bufferLabel,
  closeBuffer,
  editBuffer,
  emptyBuffers,
  getBuffer,
  isDirty,
  openBuffer,
  reloadBuffer,
  saveCondition,
  saveConflicted,
  saveFailed,
  saveSucceeded,
  type Buffers,
} from "./buffers";
import { EditorState, EditorView, createState, language } from "./cm";
import { FileTree } from "./FileTree";
import { loadLanguage } from "./languages";

interface Props {
  pod: string;
  tabId: string;
  active: boolean;
  register: (id: string, handle: TabHandle | null) => void;
}

const wideEnough = () => typeof window === "undefined" || !window.matchMedia || window.matchMedia("(min-width: 1000px)").matches;

/** The editor tab: the file tree of /workspace and CodeMirror with the open
 *  files as sub-tabs. Loaded as its own chunk. */
export default function EditorPane({ pod, tabId, active, register }: Props) {
  const api = useApi();
  const toasts = useToasts();
  const id = useId();
  const [buffers, setBuffersState] = useState<Buffers>(emptyBuffers);
  const buffersRef = useRef(buffers);
  const setBuffers = useCallback((fn: (b: Buffers) => Buffers) => {
    setBuffersState((prev) => {
      const next = fn(prev);
      buffersRef.current = next;
      return next;
    });
  }, []);
  const [treeOpen, setTreeOpen] = useState(wideEnough);
  const [opening, setOpening] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const [invalidate, setInvalidate] = useState<{ dir: string; n: number } | null>(null);
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const states = useRef(new Map<string, EditorState>());

  // one view; each open file keeps its own EditorState (undo history, selection)
  useEffect(() => {
    if (!host.current) return;
    const v = new EditorView({ parent: host.current, state: EditorState.create({ doc: "" }) });
    view.current = v;
    return () => {
      v.destroy();
      view.current = null;
    };
  }, []);

  const makeState = useCallback(
    (path: string, text: string, readOnly: boolean) => {
      const st = createState(text, {
        readOnly,
        onChange: (state, docChanged) => {
          states.current.set(path, state);
          if (docChanged) setBuffers((b) => editBuffer(b, path, state.doc.toString()));
        },
      });
      states.current.set(path, st);
      loadLanguage(path)?.then(
        (ext) => {
          const current = states.current.get(path);
          if (!current) return;
          const v = view.current;
          if (v && v.state === current) v.dispatch({ effects: language.reconfigure(ext) });
          else states.current.set(path, current.update({ effects: language.reconfigure(ext) }).state);
        },
        () => undefined,
      );
      return st;
    },
    [setBuffers],
  );

  const activePath = buffers.active;
  useEffect(() => {
    const v = view.current;
    if (!v) return;
    const st = activePath ? states.current.get(activePath) : undefined;
    if (st && v.state !== st) v.setState(st);
    if (st && active) v.focus();
  }, [activePath, active, buffers.open.length]);

  const openFile = useCallback(
    async (path: string) => {
      if (getBuffer(buffersRef.current, path)) {
        setBuffers((b) => activateBuffer(b, path));
        return;
      }
      setOpening(path);
      try {
        const c = await api.files.read(pod, path);
        if (c.text === null) {
          toasts.info(`${baseName(path)} is a binary file (${c.bytes.length} bytes); it is not shown.`);
          return;
        }
        makeState(path, c.text, false);
        setBuffers((b) => openBuffer(b, path, c.text!, c.etag));
      } catch (e) {
        toasts.push("error", `Could not open ${path}: ${errorMessage(e)}`);
      } finally {
        setOpening(null);
      }
    },
    [api, pod, makeState, setBuffers, toasts],
  );

  const save = useCallback(
    async (path: string, force = false) => {
      const b = getBuffer(buffersRef.current, path);
      if (!b || b.readOnly || b.status === "saving") return;
      if (!force && (b.status === "conflict" || !isDirty(b))) return;
      // the editor's own document: React's copy may lag a keystroke behind
      const text = states.current.get(path)?.doc.toString() ?? b.text;
      setBuffers((s) => beginSave(s, path));
      try {
        const etag = await api.files.write(pod, path, text, force ? "force" : saveCondition(b));
        setBuffers((s) => saveSucceeded(s, path, text, etag));
      } catch (e) {
        if (e instanceof FileConflictError) setBuffers((s) => saveConflicted(s, path));
        else {
          setBuffers((s) => saveFailed(s, path, errorMessage(e)));
          toasts.push("error", `Could not save ${baseName(path)}: ${errorMessage(e)}`);
        }
      }
    },
    [api, pod, setBuffers, toasts],
  );

  const reload = useCallback(
    async (path: string) => {
      try {
        const c = await api.files.read(pod, path);
        if (c.text === null) throw new Error("the file is now binary");
        const st = makeState(path, c.text, false);
        setBuffers((s) => reloadBuffer(s, path, c.text!, c.etag));
        if (view.current && buffersRef.current.active === path) view.current.setState(st);
      } catch (e) {
        toasts.push("error", `Could not reload ${baseName(path)}: ${errorMessage(e)}`);
      }
    },
    [api, pod, makeState, setBuffers, toasts],
  );

  const close = (path: string) => {
    const b = getBuffer(buffersRef.current, path);
    if (b && isDirty(b) && !window.confirm(`Discard your changes to ${baseName(path)}?`)) return;
    states.current.delete(path);
    setBuffers((s) => closeBuffer(s, path));
  };

  // The workspace asks before closing the whole editor tab with edits.
  useEffect(() => {
    register(tabId, {
      confirmClose: () => !anyDirty(buffersRef.current) || window.confirm("The editor has unsaved changes. Close it anyway?"),
      focus: () => view.current?.focus(),
    });
    return () => register(tabId, null);
  }, [register, tabId]);

  const dirty = anyDirty(buffers);
  useEffect(() => {
    if (!dirty) return;
    const onBeforeUnload = (e: BeforeUnloadEvent) => {
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", onBeforeUnload);
    return () => window.removeEventListener("beforeunload", onBeforeUnload);
  }, [dirty]);

  const onKeyDown = (e: KeyboardEvent<HTMLDivElement>) => {
    if ((e.ctrlKey || e.metaKey) && !e.altKey && !e.shiftKey && e.key.toLowerCase() === "s") {
      e.preventDefault();
      if (buffersRef.current.active) void save(buffersRef.current.active);
    }
  };

  const current = getBuffer(buffers, activePath);
  return (
    <div className={treeOpen ? "editor-pane" : "editor-pane editor-pane-collapsed"} onKeyDown={onKeyDown}>
      {treeOpen && (
        <aside className="editor-sidebar" aria-label="File explorer">
          <FileTree
            pod={pod}
            files={api.files}
            root={WORKSPACE}
            activePath={activePath}
            onOpen={(p) => void openFile(p)}
            onNewFile={() => setCreating(true)}
            invalidate={invalidate}
          />
        </aside>
      )}
      <div className="editor-main">
        <div className="editor-bar">
          <button
            type="button"
            className="icon-btn"
            aria-label={treeOpen ? "Hide file tree" : "Show file tree"}
            aria-expanded={treeOpen}
            title={treeOpen ? "Hide file tree" : "Show file tree"}
            onClick={() => setTreeOpen((o) => !o)}
          >
            ☰
          </button>
          <div role="tablist" aria-label="Open files" className="file-tabs">
            {buffers.open.map((b) => (
              <div key={b.path} role="presentation" className={b.path === activePath ? "file-tab active" : "file-tab"}>
                <button
                  type="button"
                  role="tab"
                  id={`${id}-ft-${b.path}`}
                  aria-selected={b.path === activePath}
                  aria-label={bufferAriaLabel(b)}
                  title={b.path}
                  tabIndex={b.path === activePath ? 0 : -1}
                  className="file-tab-main"
                  onClick={() => setBuffers((s) => activateBuffer(s, b.path))}
                  onAuxClick={(e) => e.button === 1 && close(b.path)}
                >
                  {bufferLabel(b)}
                </button>
                <button type="button" className="tab-close" aria-label={`Close ${baseName(b.path)}`} onClick={() => close(b.path)}>
                  ×
                </button>
              </div>
            ))}
          </div>
          {current && (
            <button
              type="button"
              className="btn btn-small"
              onClick={() => void save(current.path)}
              disabled={!isDirty(current) || current.status === "saving" || current.status === "conflict"}
              title="Save (Ctrl+S)"
            >
              {current.status === "saving" ? "Saving…" : "Save"}
            </button>
          )}
        </div>
        {current?.status === "conflict" && (
          <div role="alert" className="conflict-banner">
            <span>
              <strong>{baseName(current.path)}</strong> changed on disk since you opened it. Overwrite it with your version,
              or reload it and drop your edits?
            </span>
            <button type="button" className="btn btn-small btn-danger" onClick={() => void save(current.path, true)}>
              Overwrite
            </button>
            <button type="button" className="btn btn-small" onClick={() => void reload(current.path)}>
              Reload
            </button>
          </div>
        )}
        {current?.error && current.status !== "conflict" && (
          <div className="notice notice-warn">Last save failed: {current.error}</div>
        )}
        <div className="editor-host-wrap">
          <div ref={host} className="editor-host" hidden={!current} />
          {!current && (
            <div className="state state-empty">
              {opening ? (
                <span role="status">Opening {baseName(opening)}…</span>
              ) : (
                <>
                  <strong>No file open</strong>
                  <p>Pick a file in the tree, or create one.</p>
                  <button type="button" className="btn" onClick={() => setCreating(true)}>
                    New file
                  </button>
                </>
              )}
            </div>
          )}
        </div>
        {current && (
          <div className="editor-status">
            <span title={current.path}>{current.path}</span>
            <span>{current.status === "saving" ? "Saving…" : isDirty(current) ? "Modified" : "Saved"}</span>
          </div>
        )}
      </div>
      {creating && (
        <NewFileDialog
          onClose={() => setCreating(false)}
          onCreate={async (path) => {
            await api.files.write(pod, path, "", { ifNoneMatch: "*" }).then(
              (etag) => {
                makeState(path, "", false);
                setBuffers((b) => openBuffer(b, path, "", etag));
                setInvalidate((v) => ({ dir: parentDir(path), n: (v?.n ?? 0) + 1 }));
                setCreating(false);
              },
              (e) => {
                throw e instanceof FileConflictError ? new Error(`${path} already exists.`) : e;
              },
            );
          }}
        />
      )}
    </div>
  );
}

function NewFileDialog({ onClose, onCreate }: { onClose: () => void; onCreate: (path: string) => Promise<void> }) {
  const id = useId();
  const [value, setValue] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const path = resolveUserPath(value);
    if (!path) {
      setError("Enter a file path, e.g. src/main.py.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await onCreate(path);
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };
  return (
    <Dialog title="New file" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div className="field">
          <label htmlFor={`${id}-path`}>File path</label>
          <input
            id={`${id}-path`}
            value={value}
            placeholder="src/main.py"
            spellCheck={false}
            onChange={(e) => setValue(e.target.value)}
          />
          <small className="field-help">Relative to {WORKSPACE}, or absolute.</small>
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
          <button type="submit" className="btn btn-primary" disabled={busy}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}
