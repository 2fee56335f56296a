const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 -> "1.5 KiB". */
export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = i === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 1;
  return `${v.toFixed(digits).replace(/\.0$/, "")} ${UNITS[i]}`;
}

export function percent(used: number | null | undefined, limit: number | null | undefined): number | null {
  if (used === null || used === undefined || !limit || limit <= 0) return null;
  return Math.max(0, Math.min(100, (used / limit) * 100));
}

/** A random id usable as a terminal session id ([A-Za-z0-9_-]{1,64}).
 *  crypto.randomUUID only exists in secure contexts (https or localhost); a
 *  self-hosted instance on plain http still has getRandomValues. */
export function randomId(): string {
  const c: Crypto | undefined = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") {
    try {
      return c.randomUUID();
    } catch {
      /* insecure context */
    }
  }
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Only http(s) URLs may be framed or opened: a `javascript:` URL in an
 *  iframe would run in this app's origin. Returns the normalised URL or null. */
export function safeHttpUrl(raw: string | null | undefined): string | null {
  if (!raw) return null;
  const s = raw.trim();
  if (!s) return null;
  try {
    const u = new URL(s);
    if (u.protocol !== "http:" && u.protocol !== "https:") return null;
    return u.toString();
  } catch {
    return null;
  }
}
