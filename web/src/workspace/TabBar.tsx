import { useEffect, useRef, useState, type DragEvent, type KeyboardEvent } from "react";
import type { Layout, WorkspaceTab, WorkspaceTabKind } from "./tabs";

export interface TabBarProps {
  layout: Layout;
  tabId: (id: string) => string;
  panelId: (id: string) => string;
  onActivate: (id: string) => void;
  onClose: (id: string) => void;
  onRename: (id: string, title: string) => void;
  onMove: (id: string, toIndex: number) => void;
  onAdd: (kind: WorkspaceTabKind) => void;
}

const ICONS: Record<WorkspaceTabKind, string> = { terminal: "❯", editor: "✎", preview: "◉", url: "↗" };

export function TabBar({ layout, tabId, panelId, onActivate, onClose, onRename, onMove, onAdd }: TabBarProps) {
  const [editing, setEditing] = useState<string | null>(null);
  const [drop, setDrop] = useState<{ id: string; side: "before" | "after" } | null>(null);
  const dragging = useRef<string | null>(null);
  const listRef = useRef<HTMLDivElement>(null);
  const tabs = layout.tabs;

  const focusTab = (id: string) => {
    requestAnimationFrame(() => {
      // a rename started meanwhile (a double-click right after the last
      // one ended) keeps the focus: taking it would blur and end it
      const active = document.activeElement;
      if (active instanceof HTMLInputElement && active.classList.contains("tab-rename")) return;
      document.getElementById(tabId(id))?.focus();
    });
  };

  const onTabKey = (e: KeyboardEvent<HTMLDivElement>, t: WorkspaceTab, i: number) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return; // workspace shortcuts
    let target: WorkspaceTab | undefined;
    switch (e.key) {
      case "ArrowRight":
        target = tabs[(i + 1) % tabs.length];
        break;
      case "ArrowLeft":
        target = tabs[(i - 1 + tabs.length) % tabs.length];
        break;
      case "Home":
        target = tabs[0];
        break;
      case "End":
        target = tabs[tabs.length - 1];
        break;
      case "Enter":
      case " ":
        e.preventDefault();
        onActivate(t.id);
        return;
      case "F2":
        e.preventDefault();
        setEditing(t.id);
        return;
      case "Delete":
        e.preventDefault();
        onClose(t.id);
        return;
      default:
        return;
    }
    if (target) {
      e.preventDefault();
      onActivate(target.id);
      focusTab(target.id);
    }
  };

  const dropIndex = (targetId: string, side: "before" | "after", dragged: string): number => {
    const from = tabs.findIndex((t) => t.id === dragged);
    let to = tabs.findIndex((t) => t.id === targetId) + (side === "after" ? 1 : 0);
    if (from < to) to -= 1;
    return to;
  };

  const sideOf = (e: DragEvent<HTMLElement>): "before" | "after" => {
    const r = e.currentTarget.getBoundingClientRect();
    return e.clientX > r.left + r.width / 2 ? "after" : "before";
  };

  return (
    <div className="tabbar">
      <div role="tablist" aria-label="Workspace tabs" aria-orientation="horizontal" className="tabs" ref={listRef}>
        {tabs.map((t, i) => {
          const selected = t.id === layout.active;
          const isDrop = drop?.id === t.id && dragging.current !== t.id;
          return (
            <div
              key={t.id}
              role="presentation"
              className={[
                "tab",
                selected ? "tab-active" : "",
                isDrop ? `tab-drop-${drop!.side}` : "",
                dragging.current === t.id ? "tab-dragging" : "",
              ].join(" ")}
              draggable={editing !== t.id}
              onDragStart={(e) => {
                dragging.current = t.id;
                e.dataTransfer?.setData("application/x-pinacle-tab", t.id);
                if (e.dataTransfer) e.dataTransfer.effectAllowed = "move";
              }}
              onDragOver={(e) => {
                if (!dragging.current) return;
                e.preventDefault();
                if (e.dataTransfer) e.dataTransfer.dropEffect = "move";
                const side = sideOf(e);
                if (drop?.id !== t.id || drop.side !== side) setDrop({ id: t.id, side });
              }}
              onDragLeave={() => setDrop((d) => (d?.id === t.id ? null : d))}
              onDrop={(e) => {
                const dragged = dragging.current;
                if (!dragged) return;
                e.preventDefault();
                const side = sideOf(e);
                if (dragged !== t.id) onMove(dragged, dropIndex(t.id, side, dragged));
                dragging.current = null;
                setDrop(null);
              }}
              onDragEnd={() => {
                dragging.current = null;
                setDrop(null);
              }}
            >
              <div
                role="tab"
                id={tabId(t.id)}
                aria-selected={selected}
                aria-controls={panelId(t.id)}
                aria-label={t.title}
                tabIndex={selected ? 0 : -1}
                className="tab-main"
                title={`${t.title} — double-click or F2 to rename, Delete to close`}
                onClick={() => onActivate(t.id)}
                onDoubleClick={() => setEditing(t.id)}
                onKeyDown={(e) => onTabKey(e, t, i)}
              >
                <span className={`tab-icon tab-icon-${t.kind}`} aria-hidden="true">
                  {ICONS[t.kind]}
                </span>
                {editing === t.id ? (
                  <RenameInput
                    title={t.title}
                    onDone={(title) => {
                      setEditing(null);
                      if (title !== null) onRename(t.id, title);
                      focusTab(t.id);
                    }}
                  />
                ) : (
                  <span className="tab-title">{t.title}</span>
                )}
              </div>
              <button
                type="button"
                className="tab-close"
                aria-label={`Close ${t.title}`}
                title={`Close ${t.title} (Alt+W)`}
                tabIndex={selected ? 0 : -1}
                onClick={(e) => {
                  e.stopPropagation();
                  onClose(t.id);
                }}
              >
                ×
              </button>
            </div>
          );
        })}
      </div>
      <AddTabMenu onAdd={onAdd} />
    </div>
  );
}

function RenameInput({ title, onDone }: { title: string; onDone: (title: string | null) => void }) {
  const [value, setValue] = useState(title);
  const ref = useRef<HTMLInputElement>(null);
  const done = useRef(false);
  useEffect(() => {
    ref.current?.focus();
    ref.current?.select();
  }, []);
  const finish = (v: string | null) => {
    if (done.current) return;
    done.current = true;
    onDone(v);
  };
  return (
    <input
      ref={ref}
      className="tab-rename"
      aria-label={`Rename ${title}`}
      value={value}
      size={Math.max(6, value.length)}
      maxLength={60}
      onChange={(e) => setValue(e.target.value)}
      onClick={(e) => e.stopPropagation()}
      onDoubleClick={(e) => e.stopPropagation()}
      onKeyDown={(e) => {
        e.stopPropagation();
        if (e.key === "Enter") {
          e.preventDefault();
          finish(value);
        } else if (e.key === "Escape") {
          e.preventDefault();
          finish(null);
        }
      }}
      onBlur={() => finish(value)}
    />
  );
}

const MENU: { kind: WorkspaceTabKind; label: string; hint: string }[] = [
  { kind: "terminal", label: "New terminal", hint: "Alt+T" },
  { kind: "editor", label: "Editor", hint: "" },
  { kind: "preview", label: "Preview…", hint: "" },
  { kind: "url", label: "URL…", hint: "" },
];

function AddTabMenu({ onAdd }: { onAdd: (kind: WorkspaceTabKind) => void }) {
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const menu = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    menu.current?.querySelector<HTMLElement>('[role="menuitem"]')?.focus();
    const onDown = (e: MouseEvent) => {
      if (!menu.current?.contains(e.target as Node) && !button.current?.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener("mousedown", onDown);
    return () => document.removeEventListener("mousedown", onDown);
  }, [open]);

  const choose = (kind: WorkspaceTabKind) => {
    setOpen(false);
    onAdd(kind);
  };

  const onMenuKey = (e: KeyboardEvent<HTMLDivElement>) => {
    const items = [...(menu.current?.querySelectorAll<HTMLElement>('[role="menuitem"]') ?? [])];
    const i = items.indexOf(document.activeElement as HTMLElement);
    if (e.key === "ArrowDown") {
      e.preventDefault();
      items[(i + 1) % items.length]?.focus();
    } else if (e.key === "ArrowUp") {
      e.preventDefault();
      items[(i - 1 + items.length) % items.length]?.focus();
    } else if (e.key === "Escape" || e.key === "Tab") {
      e.preventDefault();
      setOpen(false);
      button.current?.focus();
    }
  };

  return (
    <div className="addtab">
      <button
        ref={button}
        type="button"
        className="icon-btn addtab-btn"
        aria-label="Add tab"
        aria-haspopup="menu"
        aria-expanded={open}
        title="Add tab"
        onClick={() => setOpen((o) => !o)}
      >
        +
      </button>
      {open && (
        <div ref={menu} role="menu" aria-label="Add tab" className="menu" onKeyDown={onMenuKey}>
          {MENU.map((m) => (
            <button
              key={m.kind}
              type="button"
              role="menuitem"
              tabIndex={-1}
              aria-label={m.label}
              aria-keyshortcuts={m.hint || undefined}
              className="menu-item"
              onClick={() => choose(m.kind)}
            >
              <span>{m.label}</span>
              {m.hint && <kbd>{m.hint}</kbd>}
            </button>
          ))}
        </div>
      )}
    </div>
  );
}
