import { deserializeLayout, serializeLayout, type Layout } from "./tabs";

/** A layout change the server has not confirmed yet, kept in this browser
 *  tab's sessionStorage. A reload right after adding a tab would otherwise
 *  race its save: the new page can read the pod before the (keepalive) save
 *  lands, and the tab would be gone. sessionStorage survives the reload, is
 *  private to this browser tab, and is dropped once the server has the
 *  layout. */
const key = (podId: string) => `pinacle.layout.pending.${podId}`;

function storage(): Storage | null {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // storage disabled: saves still go to the server
  }
}

export function rememberPendingLayout(podId: string, layout: Layout): void {
  try {
    storage()?.setItem(key(podId), JSON.stringify(serializeLayout(layout)));
  } catch {
    // full or disabled: the debounced save still runs
  }
}

/** The unconfirmed layout for this pod, if this browser tab has one. */
export function pendingLayout(podId: string): Layout | null {
  const raw = storage()?.getItem(key(podId));
  return raw ? deserializeLayout(raw) : null;
}

/** Forgets the pending layout; with `saved`, only when it is exactly the
 *  layout the server just confirmed (a later change stays pending). */
export function forgetPendingLayout(podId: string, saved?: Layout): void {
  const s = storage();
  if (!s) return;
  if (saved && s.getItem(key(podId)) !== JSON.stringify(serializeLayout(saved))) return;
  s.removeItem(key(podId));
}
