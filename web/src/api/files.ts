import { ApiError, errorFromResponse } from "./errors";

export type EntryKind = "file" | "dir" | "symlink" | "other";

export interface FileEntry {
  name: string;
  kind: EntryKind;
  size: number;
  mode?: number;
  modified?: string | number | null;
}

export interface FileContent {
  /** null when the bytes are not UTF-8 text */
  text: string | null;
  bytes: Uint8Array;
  etag: string | null;
}

/** Thrown on 412: the file changed on disk since it was read (or, for a new
 *  file, it exists already). */
export class FileConflictError extends ApiError {
  constructor(message: string, code = "file_changed") {
    super(412, code, message);
    this.name = "FileConflictError";
  }
}

export type WriteCondition = { ifMatch: string } | { ifNoneMatch: "*" } | "force";

export interface FilesApi {
  list(pod: string, path: string): Promise<FileEntry[]>;
  read(pod: string, path: string): Promise<FileContent>;
  /** Returns the new ETag (or null when the server sent none). */
  write(pod: string, path: string, text: string, cond: WriteCondition): Promise<string | null>;
}

type AuthFetch = (input: string, init?: RequestInit) => Promise<Response>;

const base = (pod: string) => `/api/v1/pods/${encodeURIComponent(pod)}/files`;

/** Directories first, then by name (case-insensitive). */
export function sortEntries(entries: FileEntry[]): FileEntry[] {
  const rank = (e: FileEntry) => (e.kind === "dir" ? 0 : 1);
  return [...entries].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name, undefined, { sensitivity: "base" }));
}

export function decodeText(bytes: Uint8Array): string | null {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    // NUL bytes: almost certainly binary even when valid UTF-8
    return text.includes("\u0000") ? null : text;
  } catch {
    return null;
  }
}

export function createFilesApi(authFetch: AuthFetch): FilesApi {
  return {
    async list(pod, path) {
      const res = await authFetch(`${base(pod)}?path=${encodeURIComponent(path)}`);
      if (!res.ok) throw await errorFromResponse(res);
      const body = (await res.json()) as { entries?: FileEntry[] };
      return sortEntries(body.entries ?? []);
    },
    async read(pod, path) {
      const res = await authFetch(`${base(pod)}/content?path=${encodeURIComponent(path)}`, { cache: "no-store" });
      if (!res.ok) throw await errorFromResponse(res);
      const bytes = new Uint8Array(await res.arrayBuffer());
      return { bytes, text: decodeText(bytes), etag: res.headers.get("ETag") };
    },
    async write(pod, path, text, cond) {
      const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
      if (cond !== "force") {
        if ("ifMatch" in cond) headers["If-Match"] = cond.ifMatch;
        else headers["If-None-Match"] = "*";
      }
      const res = await authFetch(`${base(pod)}/content?path=${encodeURIComponent(path)}`, {
        method: "PUT",
        headers,
        body: new TextEncoder().encode(text),
      });
      if (res.status === 412) {
        const err = await errorFromResponse(res);
        const exists = cond !== "force" && "ifNoneMatch" in cond;
        throw new FileConflictError(
          exists ? `${path} already exists.` : err.message || `${path} changed on disk.`,
          exists ? "file_exists" : err.code === "precondition_failed" ? "file_changed" : err.code,
        );
      }
      if (!res.ok) throw await errorFromResponse(res);
      return res.headers.get("ETag");
    },
  };
}

export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

export function baseName(path: string): string {
  const parts = path.split("/").filter(Boolean);
  return parts[parts.length - 1] ?? path;
}

export function parentDir(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  if (i <= 0) return "/";
  return path.slice(0, i);
}

export const WORKSPACE = "/workspace";

/** A user-typed path: absolute, or relative to /workspace; `..` and `.`
 *  folded. Returns null for an empty path or a directory path. */
export function resolveUserPath(input: string): string | null {
  const s = input.trim();
  if (!s || s.endsWith("/")) return null;
  const abs = s.startsWith("/") ? s : `${WORKSPACE}/${s}`;
  const out: string[] = [];
  for (const part of abs.split("/")) {
    if (!part || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out.length ? "/" + out.join("/") : null;
}
