/** Open files of an editor tab: pure state transitions for dirty tracking,
 *  saving with If-Match, and the conflict when the file changed on disk. */
import type { WriteCondition } from "../../api/files";
import { baseName } from "../../api/files";

export type BufferStatus = "clean" | "dirty" | "saving" | "conflict";

export interface Buffer {
  path: string;
  /** what the server has, as far as we know */
  savedText: string;
  text: string;
  /** the ETag of savedText; null when the server sent none */
  etag: string | null;
  status: BufferStatus;
  /** created in the editor, not yet on disk */
  isNew: boolean;
  readOnly: boolean;
  /** the last save error, other than a conflict */
  error: string | null;
}

export interface Buffers {
  open: Buffer[];
  active: string | null;
}

export const emptyBuffers: Buffers = { open: [], active: null };

export function isDirty(b: Buffer): boolean {
  return b.isNew || b.text !== b.savedText;
}

export function anyDirty(s: Buffers): boolean {
  return s.open.some(isDirty);
}

export function getBuffer(s: Buffers, path: string | null): Buffer | undefined {
  return path === null ? undefined : s.open.find((b) => b.path === path);
}

function statusFor(b: Buffer): BufferStatus {
  return isDirty(b) ? "dirty" : "clean";
}

function update(s: Buffers, path: string, fn: (b: Buffer) => Buffer): Buffers {
  let hit = false;
  const open = s.open.map((b) => {
    if (b.path !== path) return b;
    hit = true;
    return fn(b);
  });
  return hit ? { ...s, open } : s;
}

/** Opens a file just read (or activates it when already open). */
export function openBuffer(
  s: Buffers,
  path: string,
  text: string,
  etag: string | null,
  opts: { isNew?: boolean; readOnly?: boolean } = {},
): Buffers {
  if (s.open.some((b) => b.path === path)) return { ...s, active: path };
  const b: Buffer = {
    path,
    savedText: text,
    text,
    etag,
    status: "clean",
    isNew: !!opts.isNew,
    readOnly: !!opts.readOnly,
    error: null,
  };
  b.status = statusFor(b);
  return { open: [...s.open, b], active: path };
}

export function activateBuffer(s: Buffers, path: string): Buffers {
  return s.open.some((b) => b.path === path) ? { ...s, active: path } : s;
}

/** The user typed. A saving buffer stays "saving" and a conflicted one
 *  stays in conflict until the user decides. */
export function editBuffer(s: Buffers, path: string, text: string): Buffers {
  return update(s, path, (b) => {
    if (b.text === text) return b;
    const next = { ...b, text };
    if (b.status === "saving" || b.status === "conflict") return next;
    return { ...next, status: statusFor(next) };
  });
}

/** The precondition for the next save: If-Match with the ETag we read,
 *  If-None-Match: * for a new file, none when the server gave no ETag. */
export function saveCondition(b: Buffer): WriteCondition {
  if (b.isNew) return { ifNoneMatch: "*" };
  if (b.etag) return { ifMatch: b.etag };
  return "force";
}

export function beginSave(s: Buffers, path: string): Buffers {
  return update(s, path, (b) => ({ ...b, status: "saving", error: null }));
}

/** `text` is what was written (the buffer may have changed meanwhile). */
export function saveSucceeded(s: Buffers, path: string, text: string, etag: string | null): Buffers {
  return update(s, path, (b) => {
    const next = { ...b, savedText: text, etag, isNew: false, error: null };
    return { ...next, status: statusFor(next) };
  });
}

/** 412: the file changed on disk since we read it (or exists, when new). */
export function saveConflicted(s: Buffers, path: string): Buffers {
  return update(s, path, (b) => ({ ...b, status: "conflict", error: null }));
}

export function saveFailed(s: Buffers, path: string, message: string): Buffers {
  return update(s, path, (b) => {
    const next = { ...b, error: message };
    return { ...next, status: statusFor(next) };
  });
}

/** "Reload": the file as it is on disk now; edits are dropped. */
export function reloadBuffer(s: Buffers, path: string, text: string, etag: string | null): Buffers {
  return update(s, path, (b) => ({ ...b, savedText: text, text, etag, isNew: false, status: "clean", error: null }));
}

export function closeBuffer(s: Buffers, path: string): Buffers {
  const i = s.open.findIndex((b) => b.path === path);
  if (i < 0) return s;
  const open = s.open.filter((b) => b.path !== path);
  let active = s.active;
  if (active === path) active = (open[i] ?? open[i - 1] ?? null)?.path ?? null;
  return { open, active };
}

/** "● main.rs" when modified. */
export function bufferLabel(b: Buffer): string {
  return `${isDirty(b) ? "● " : ""}${baseName(b.path)}`;
}

/** The accessible name of a file's sub-tab. */
export function bufferAriaLabel(b: Buffer): string {
  const parts = [baseName(b.path)];
  if (isDirty(b)) parts.push("modified");
  if (b.status === "conflict") parts.push("changed on disk");
  return parts.join(", ");
}
