import { useCallback, useEffect, useRef, useState } from "react";
import { useApi } from "../api/context";
import { ApiError } from "../api/errors";
import type { PodGithub } from "../api/github";
import {
  CREATE_SNAPSHOT,
  DELETE_POD,
  POD,
  POD_EVENTS,
  POD_UPDATES,
  POD_USAGE,
  SAVE_LAYOUT,
  START_POD,
  STOP_POD,
} from "../api/queries";
import type { PodDetail, PodEvent, PodState, PodSummary, PodUsage } from "../api/types";
import { GithubBadges } from "../components/GithubBadges";
import { HostBadge, StateBadge, isTransitional, stateLabel } from "../components/StateBadge";
import { ErrorState, Loading } from "../components/States";
import { useToasts } from "../components/Toasts";
import { UsageBars } from "../components/UsageBars";
import { debounce } from "../lib/debounce";
import { formatDateTime } from "../lib/time";
import { Link, navigate } from "../router";
import { preloadTerminal, Workspace } from "../workspace/Workspace";
import { forgetPendingLayout, pendingLayout, rememberPendingLayout } from "../workspace/pendingLayout";
import { defaultLayout, deserializeLayout, sameLayout, serializeLayout, type Layout } from "../workspace/tabs";
import { DeleteDialog, SnapshotDialog, SshDialog } from "./PodDialogs";

export const LAYOUT_SAVE_MS = 500;
export const USAGE_POLL_MS = 5000;
/** How often the pod's GitHub state (a branch moved on) is read again. */
export const GITHUB_POLL_MS = 60_000;

export function WorkspacePage({ podKey }: { podKey: string }) {
  const api = useApi();
  const toasts = useToasts();
  const [pod, setPod] = useState<PodDetail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  const [layout, setLayoutState] = useState<Layout | null>(null);
  const [usage, setUsage] = useState<PodUsage | null>(null);
  const [dialog, setDialog] = useState<"ssh" | "snapshot" | "delete" | null>(null);
  const [busy, setBusy] = useState(false);
  const [github, setGithub] = useState<PodGithub | null>(null);
  const podId = pod?.id ?? null;

  useEffect(() => {
    const ctl = new AbortController();
    setError(null);
    api.gql<{ pod: PodDetail }>(POD, { id: podKey }, { signal: ctl.signal }).then(
      (d) => {
        if (ctl.signal.aborted) return;
        setPod(d.pod);
        setLayoutState(
          (prev) => prev ?? pendingLayout(d.pod.id) ?? deserializeLayout(d.pod.layout) ?? defaultLayout(d.pod.tabs),
        );
      },
      (e) => !ctl.signal.aborted && setError(e),
    );
    return () => ctl.abort();
  }, [api, podKey, tick]);

  // The pod's state, live.
  useEffect(() => {
    if (!podId) return;
    return api.subscribe<{ podUpdates: PodSummary }>(POD_UPDATES, {}, {
      next: (d) => {
        if (d.podUpdates.id !== podId) return;
        setPod((prev) => (prev ? { ...prev, ...d.podUpdates } : prev));
      },
      error: () => undefined,
    });
  }, [api, podId]);

  // The repository it was cloned from (REST only: the GraphQL pod carries
  // none); read again every minute. A failure keeps what was shown.
  useEffect(() => {
    if (!podId) return;
    let live = true;
    const load = () =>
      api.github.podLink(podId).then(
        (g) => live && setGithub(g),
        () => undefined,
      );
    void load();
    const t = setInterval(load, GITHUB_POLL_MS);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [api, podId]);

  // Layout: saved (debounced) whenever it differs from what the server has.
  // Until the server confirms it, the change is also kept in sessionStorage,
  // so a reload that overtakes the save still shows it (and saves it again).
  const saved = useRef<Layout | null>(null);
  const inFlight = useRef(0);
  const unloading = useRef(false);
  const saver = useRef<ReturnType<typeof debounce<[string, Layout]>> | null>(null);
  if (!saver.current) {
    saver.current = debounce((id: string, l: Layout) => {
      const keepalive = unloading.current;
      inFlight.current += 1;
      api
        .gql<{ saveLayout: boolean }>(SAVE_LAYOUT, { pod: id, layout: serializeLayout(l) }, { keepalive })
        .then(() => {
          saved.current = l;
          forgetPendingLayout(id, l);
        })
        .catch((e) => {
          if (!keepalive) toasts.push("error", `Could not save the tab layout: ${e instanceof Error ? e.message : e}`);
        })
        .finally(() => {
          inFlight.current -= 1;
        });
    }, LAYOUT_SAVE_MS);
  }
  useEffect(() => {
    if (pod && saved.current === null) saved.current = deserializeLayout(pod.layout);
  }, [pod]);
  useEffect(() => {
    if (!podId || !layout) return;
    if (sameLayout(layout, saved.current) && inFlight.current === 0) {
      // back to what the server has: nothing to save or remember
      saver.current!.cancel();
      forgetPendingLayout(podId);
      return;
    }
    rememberPendingLayout(podId, layout);
    saver.current!(podId, layout);
  }, [layout, podId]);
  useEffect(() => {
    const onHide = () => {
      unloading.current = true;
      saver.current?.flush();
      unloading.current = false;
    };
    window.addEventListener("pagehide", onHide);
    return () => {
      window.removeEventListener("pagehide", onHide);
      saver.current?.flush();
    };
  }, []);

  const setLayout = useCallback((update: (l: Layout) => Layout) => {
    setLayoutState((l) => (l ? update(l) : l));
  }, []);

  // The terminal is the first thing shown once the pod runs: fetch its code now.
  useEffect(preloadTerminal, []);

  // Usage every 5 s while running.
  const running = pod?.state === "RUNNING";
  useEffect(() => {
    if (!podId || !running) {
      setUsage(null);
      return;
    }
    let live = true;
    const poll = () =>
      api.gql<{ pod: { usage: PodUsage | null } }>(POD_USAGE, { id: podId }).then(
        (d) => live && setUsage(d.pod.usage),
        () => undefined,
      );
    void poll();
    const t = setInterval(poll, USAGE_POLL_MS);
    return () => {
      live = false;
      clearInterval(t);
    };
  }, [api, podId, running]);

  if (error) {
    const notFound = error instanceof ApiError && error.code === "not_found";
    return (
      <section className="page">
        <ErrorState
          title={notFound ? `No pod named ${podKey}` : "Could not load the pod"}
          error={error}
          onRetry={notFound ? undefined : () => setTick((t) => t + 1)}
        />
        <p>
          <Link to="/">Back to your pods</Link>
        </p>
      </section>
    );
  }
  if (!pod || !layout) return <Loading label={`Loading ${podKey}…`} />;

  const act = async (mutation: string, field: "startPod" | "stopPod") => {
    setBusy(true);
    try {
      const d = await api.gql<Record<string, PodSummary>>(mutation, { id: pod.id });
      const next = d[field];
      if (next) setPod((prev) => (prev ? { ...prev, ...next } : prev));
    } catch (e) {
      toasts.error(e);
    } finally {
      setBusy(false);
    }
  };

  const state = pod.state;
  const canStart = state === "STOPPED" || state === "ERROR";
  const canStop = state === "RUNNING" || state === "STARTING" || state === "PROVISIONING";
  return (
    <div className="workspace-page">
      <header className="pod-header">
        <div className="pod-title">
          <h1>
            {pod.team && <span className="muted">{pod.team} / </span>}
            {pod.name}
          </h1>
          <StateBadge state={state} reason={pod.stateReason} />
          <HostBadge status={pod.hostStatus} />
          <GithubBadges github={github} />
          <span className="tag" title={`${pod.tier.vcpus} vCPU`}>
            {pod.tier.name}
          </span>
        </div>
        <UsageBars usage={running ? usage : null} tier={pod.tier} />
        <div className="pod-actions" role="group" aria-label="Pod actions">
          {canStart ? (
            <button type="button" className="btn btn-small btn-primary" disabled={busy} onClick={() => act(START_POD, "startPod")}>
              Start
            </button>
          ) : (
            <button
              type="button"
              className="btn btn-small"
              disabled={busy || !canStop}
              onClick={() => {
                // stopping ends every process and closes the editor's files
                if (window.confirm(`Stop ${pod.name}? Its processes end, and unsaved editor changes are lost.`)) void act(STOP_POD, "stopPod");
              }}
            >
              Stop
            </button>
          )}
          <button type="button" className="btn btn-small" onClick={() => setDialog("snapshot")}>
            Snapshot
          </button>
          <button type="button" className="btn btn-small" onClick={() => setDialog("ssh")}>
            SSH
          </button>
          <button
            type="button"
            className="btn btn-small btn-danger-ghost"
            disabled={state === "DELETING"}
            onClick={() => setDialog("delete")}
          >
            Delete
          </button>
        </div>
      </header>

      {state === "RUNNING" ? (
        <Workspace pod={pod.id} layout={layout} setLayout={setLayout} />
      ) : (
        <ProvisioningPanel
          pod={pod}
          onStart={canStart ? () => act(START_POD, "startPod") : undefined}
          busy={busy}
          // the event stream has history: a state change the update stream missed still lands
          onState={(to) => setPod((prev) => (prev && prev.state !== to ? { ...prev, state: to } : prev))}
        />
      )}

      {dialog === "ssh" && <SshDialog command={pod.sshCommand} onClose={() => setDialog(null)} />}
      {dialog === "snapshot" && (
        <SnapshotDialog
          onClose={() => setDialog(null)}
          onSubmit={async (name) => {
            await api.gql(CREATE_SNAPSHOT, { pod: pod.id, name });
            setDialog(null);
            toasts.push("success", name ? `Snapshot “${name}” created.` : "Snapshot created.");
          }}
        />
      )}
      {dialog === "delete" && (
        <DeleteDialog
          podName={pod.name}
          onClose={() => setDialog(null)}
          onConfirm={async () => {
            saver.current?.cancel();
            await api.gql(DELETE_POD, { id: pod.id });
            toasts.push("info", `Deleting ${pod.name}…`);
            navigate("/");
          }}
        />
      )}
    </div>
  );
}

const STATE_TEXT: Partial<Record<PodState, string>> = {
  PENDING: "Waiting for a host to take the pod…",
  PROVISIONING: "Preparing the pod: image, disk, network and install steps.",
  STARTING: "Starting the pod…",
  STOPPING: "Stopping the pod…",
  STOPPED: "The pod is stopped. Its disk (/workspace and home) is kept.",
  DELETING: "Deleting the pod…",
  DELETED: "The pod was deleted.",
  ERROR: "The pod failed.",
};

function ProvisioningPanel({
  pod,
  onStart,
  busy,
  onState,
}: {
  pod: PodDetail;
  onStart?: () => void;
  busy: boolean;
  onState?: (state: PodEvent["to"]) => void;
}) {
  const api = useApi();
  const [events, setEvents] = useState<PodEvent[]>([]);
  const [streamError, setStreamError] = useState<string | null>(null);
  const logRef = useRef<HTMLOListElement>(null);

  useEffect(() => {
    setEvents([]);
    setStreamError(null);
    return api.subscribe<{ podEvents: PodEvent }>(POD_EVENTS, { pod: pod.id, after: null }, {
      next: (d) => {
        setEvents((prev) => (prev.some((e) => e.seq === d.podEvents.seq) ? prev : [...prev, d.podEvents].sort((a, b) => a.seq - b.seq)));
        // history replays too: only changes after what the page last saw
        if (Date.parse(d.podEvents.at) > Date.parse(pod.lastActivityAt)) onState?.(d.podEvents.to);
      },
      error: (e) => setStreamError(e.message),
    });
  }, [api, pod.id]);

  useEffect(() => {
    const el = logRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [events]);

  const transitional = isTransitional(pod.state);
  // an image pull's or a clone's latest step (events that change no state)
  const now = transitional ? [...events].reverse().find((e) => e.event === "progress")?.message : undefined;
  return (
    <section className="provisioning" aria-labelledby="prov-heading">
      <div className="provisioning-head">
        <h2 id="prov-heading">
          {transitional && <span className="spinner" aria-hidden="true" />} {stateLabel(pod.state)}
        </h2>
        <p>{STATE_TEXT[pod.state]}</p>
        {now && (
          <p className="muted" role="status" aria-label="Progress">
            {now}
          </p>
        )}
        {pod.stateReason && (
          <p className={pod.state === "ERROR" ? "form-error" : "muted"} role={pod.state === "ERROR" ? "alert" : undefined}>
            {pod.stateReason}
          </p>
        )}
        {onStart && (
          <button type="button" className="btn btn-primary" onClick={onStart} disabled={busy}>
            {pod.state === "ERROR" ? "Try starting again" : "Start pod"}
          </button>
        )}
      </div>
      <h3>Events</h3>
      {streamError && <p className="field-error">Event stream: {streamError}</p>}
      <ol className="event-log" role="log" aria-label="Pod events" aria-live="polite" ref={logRef}>
        {events.length === 0 && <li className="muted">No events yet.</li>}
        {events.map((e) => (
          <li key={e.seq}>
            <time dateTime={e.at}>{formatDateTime(e.at)}</time>
            <span className="event-name">{e.event}</span>
            {e.event !== "progress" && (
              <span className="event-states">
                {e.from ? `${stateLabel(e.from)} → ` : ""}
                {stateLabel(e.to)}
              </span>
            )}
            {e.message && <span className="event-message">{e.message}</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}
