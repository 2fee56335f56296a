/** Workspace keyboard shortcuts, as a pure mapping from a key event. */

export type ShortcutAction =
  | { type: "activate-index"; index: number }
  | { type: "prev" }
  | { type: "next" }
  | { type: "move"; delta: -1 | 1 }
  | { type: "new-terminal" }
  | { type: "close" };

export interface KeyLike {
  key: string;
  code?: string;
  altKey: boolean;
  ctrlKey: boolean;
  shiftKey: boolean;
  metaKey: boolean;
}

/** Alt+1..9 tab N, Alt+PageUp/PageDown and Ctrl+Alt+Left/Right previous /
 *  next, Alt+Shift+Left/Right move the tab, Alt+T new terminal, Alt+W close.
 *  Uses `code` where it can: with Alt held, macOS reports other characters
 *  in `key` (Alt+T is "†"). */
export function shortcutFor(e: KeyLike): ShortcutAction | null {
  if (!e.altKey || e.metaKey) return null;
  const code = e.code ?? "";
  const key = e.key;
  if (e.ctrlKey && !e.shiftKey) {
    if (key === "ArrowLeft" || code === "ArrowLeft") return { type: "prev" };
    if (key === "ArrowRight" || code === "ArrowRight") return { type: "next" };
    return null;
  }
  if (e.ctrlKey) return null;
  if (e.shiftKey) {
    if (key === "ArrowLeft" || code === "ArrowLeft") return { type: "move", delta: -1 };
    if (key === "ArrowRight" || code === "ArrowRight") return { type: "move", delta: 1 };
    return null;
  }
  const digit = /^Digit([1-9])$/.exec(code) ?? /^([1-9])$/.exec(key);
  if (digit) return { type: "activate-index", index: Number(digit[1]) - 1 };
  if (key === "PageUp" || code === "PageUp") return { type: "prev" };
  if (key === "PageDown" || code === "PageDown") return { type: "next" };
  if (code === "KeyT" || (!code && key.toLowerCase() === "t")) return { type: "new-terminal" };
  if (code === "KeyW" || (!code && key.toLowerCase() === "w")) return { type: "close" };
  return null;
}
