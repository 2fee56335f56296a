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

export function StateBadge({ state, reason }: { state: PodState; reason?: string | null }) {
  return (
    <span className={`badge badge-${state.toLowerCase()}`} title={reason ?? undefined} data-state={state}>
      {isTransitional(state) && <span className="pulse" aria-hidden="true" />}
      {stateLabel(state)}
    </span>
  );
}
