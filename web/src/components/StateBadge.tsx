import type { PodState } from "../api/types";

const LABELS: Record<PodState, string> = {
  PENDING: "Pending",
  PROVISIONING: "Provisioning",
  RUNNING: "Running",
  STOPPING: "Stopping",
  STOPPED: "Stopped",
  STARTING: "Starting",
  DELETING: "Deleting",
  DELETED: "Deleted",
  ERROR: "Error",
};

export function stateLabel(s: PodState): string {
  return LABELS[s] ?? s;
}

export function isTransitional(s: PodState): boolean {
  return s === "PENDING" || s === "PROVISIONING" || s === "STOPPING" || s === "STARTING" || s === "DELETING";
}

const HOST_HINTS: Record<string, string> = {
  cordoned: "its host takes no new pods; this one keeps running",
  unreachable: "its host has stopped reporting: terminals, files and logs wait until it is back",
  lost: "its host has not reported for minutes",
};

/** A pod's host when it is not ready; nothing when it is. */
export function HostBadge({ status }: { status?: string | null }) {
  if (!status) return null;
  return (
    <span className={`badge badge-host badge-host-${status}`} data-host-status={status} title={`Host ${status}: ${HOST_HINTS[status] ?? ""}`}>
      Host {status}
    </span>
  );
}

export function StateBadge({ state, reason }: { state: PodState; reason?: string | null }) {
  return (
    <span className={`badge badge-${state.toLowerCase()}`} title={reason ?? undefined} data-state={state}>
      {isTransitional(state) && <span className="pulse" aria-hidden="true" />}
      {stateLabel(state)}
    </span>
  );
}
