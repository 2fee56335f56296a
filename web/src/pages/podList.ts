import type { PodSummary } from "../api/types";

/** Personal pods first, then by team, then by name. */
export function sortPods(pods: PodSummary[]): PodSummary[] {
  return [...pods].sort(
    (a, b) =>
      Number(a.team !== null) - Number(b.team !== null) ||
      (a.team ?? "").localeCompare(b.team ?? "") ||
      a.name.localeCompare(b.name),
  );
}

/** Applies one `podUpdates` message: a changed pod replaces its row, a new
 *  one is added, a deleted one leaves. */
export function mergePodUpdate(list: PodSummary[], pod: PodSummary): PodSummary[] {
  const i = list.findIndex((p) => p.id === pod.id);
  if (pod.state === "DELETED") return i < 0 ? list : list.filter((p) => p.id !== pod.id);
  if (i < 0) return sortPods([...list, pod]);
  const next = [...list];
  next[i] = { ...next[i]!, ...pod };
  return next;
}
