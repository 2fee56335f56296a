/** Human "3 min ago" style relative time. `now` is injectable for tests. */
export function formatRelative(date: string | number | Date | null | undefined, now: number = Date.now()): string {
  if (date === null || date === undefined || date === "") return "—";
  const t = date instanceof Date ? date.getTime() : typeof date === "number" ? date : Date.parse(date);
  if (!Number.isFinite(t)) return "—";
  const diff = Math.round((now - t) / 1000);
  if (diff < 0) {
    // clock skew between server and browser: a moment in the future reads as "just now"
    return diff > -60 ? "just now" : "in the future";
  }
  if (diff < 45) return "just now";
  const min = Math.round(diff / 60);
  if (min < 60) return `${min} min ago`;
  const h = Math.round(diff / 3600);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(diff / 86400);
  if (d < 31) return d === 1 ? "1 day ago" : `${d} days ago`;
  const mo = Math.round(d / 30.4);
  if (mo < 12) return mo === 1 ? "1 month ago" : `${mo} months ago`;
  const y = Math.round(d / 365);
  return y === 1 ? "1 year ago" : `${y} years ago`;
}

export function formatDateTime(date: string | null | undefined): string {
  if (!date) return "—";
  const t = new Date(date);
  if (Number.isNaN(t.getTime())) return "—";
  return t.toLocaleString();
}
