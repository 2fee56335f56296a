import { useSyncExternalStore, type AnchorHTMLAttributes, type MouseEvent } from "react";

/** A tiny history-API router. */

const listeners = new Set<() => void>();
let popstateBound = false;

function subscribe(fn: () => void): () => void {
  if (!popstateBound && typeof window !== "undefined") {
    window.addEventListener("popstate", () => emit());
    popstateBound = true;
  }
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(): void {
  for (const l of [...listeners]) l();
}

const snapshot = () => window.location.pathname + window.location.search + window.location.hash;

export interface LocationInfo {
  pathname: string;
  search: string;
  hash: string;
}

export function useLocation(): LocationInfo {
  useSyncExternalStore(subscribe, snapshot, snapshot);
  return { pathname: window.location.pathname, search: window.location.search, hash: window.location.hash };
}

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  const current = snapshot();
  if (to === current) return;
  if (opts.replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  emit();
}

/** `/pods/:name` or `/pods/*` (the rest, slashes included, as `*`).
 *  Returns decoded params or null. */
export function matchRoute(pattern: string, pathname: string): Record<string, string> | null {
  const pp = pattern.split("/").filter(Boolean);
  const parts = pathname.split("/").filter(Boolean);
  const params: Record<string, string> = {};
  for (let i = 0; i < pp.length; i++) {
    const p = pp[i]!;
    if (p === "*") {
      const rest = parts.slice(i);
      if (rest.length === 0) return null;
      try {
        params["*"] = rest.map(decodeURIComponent).join("/");
      } catch {
        return null;
      }
      return params;
    }
    const part = parts[i];
    if (part === undefined) return null;
    if (p.startsWith(":")) {
      try {
        params[p.slice(1)] = decodeURIComponent(part);
      } catch {
        return null;
      }
    } else if (p !== part) return null;
  }
  return parts.length === pp.length ? params : null;
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { to: string };

export function Link({ to, onClick, ...rest }: LinkProps) {
  const handle = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (rest.target && rest.target !== "_self") return;
    e.preventDefault();
    navigate(to);
  };
  return <a href={to} onClick={handle} {...rest} />;
}
