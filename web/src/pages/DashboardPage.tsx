import { useEffect, useRef, useState } from "react";
import { useApi } from "../api/context";
import type { PodGithub } from "../api/github";
import { PODS, POD_UPDATES } from "../api/queries";
import type { PodSummary } from "../api/types";
import { GithubBadges } from "../components/GithubBadges";
import { HostBadge, StateBadge } from "../components/StateBadge";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { podPath } from "../lib/podName";
import { formatDateTime, formatRelative } from "../lib/time";
import { useNow } from "../lib/useAsync";
import { Link, navigate } from "../router";
import { NewPodDialog } from "./NewPodDialog";
import { mergePodUpdate, sortPods } from "./podList";

/** How often the pods' GitHub state (a branch moved on) is read again. */
export const GITHUB_POLL_MS = 60_000;

export function DashboardPage() {
  const api = useApi();
  const [pods, setPods] = useState<PodSummary[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [liveError, setLiveError] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const [tick, setTick] = useState(0);
  const pending = useRef<PodSummary[]>([]);
  const loaded = useRef(false);
  const now = useNow(30_000);
  const github = usePodGithub(tick);

  // Live updates first, then the list: an update that lands while the list
  // is loading is applied on top of it.
  useEffect(() => {
    setLiveError(null);
    const unsubscribe = api.subscribe<{ podUpdates: PodSummary }>(POD_UPDATES, {}, {
      next: (d) => {
        const pod = d.podUpdates;
        if (!loaded.current) pending.current.push(pod);
        else setPods((prev) => (prev ? mergePodUpdate(prev, pod) : prev));
      },
      error: (e) => setLiveError(e.message || "Live updates stopped."),
    });
    return unsubscribe;
  }, [api, tick]);

  useEffect(() => {
    const ctl = new AbortController();
    setError(null);
    api.gql<{ pods: PodSummary[] }>(PODS, {}, { signal: ctl.signal }).then(
      (d) => {
        if (ctl.signal.aborted) return;
        let list = sortPods(d.pods.filter((p) => p.state !== "DELETED"));
        for (const u of pending.current) list = mergePodUpdate(list, u);
        pending.current = [];
        loaded.current = true;
        setPods(list);
      },
      (e) => {
        if (!ctl.signal.aborted) setError(e);
      },
    );
    return () => ctl.abort();
  }, [api, tick]);

  const retry = () => {
    loaded.current = false;
    pending.current = [];
    setPods(null);
    setTick((t) => t + 1);
  };

  return (
    <section className="page" aria-labelledby="pods-heading">
      <div className="page-header">
        <h1 id="pods-heading">Pods</h1>
        <button type="button" className="btn btn-primary" onClick={() => setCreating(true)}>
          New pod
        </button>
      </div>
      {liveError && pods && (
        <div className="notice notice-warn" role="status">
          Live updates are paused ({liveError}).{" "}
          <button type="button" className="link-btn" onClick={retry}>
            Reconnect
          </button>
        </div>
      )}
      {error ? (
        <ErrorState title="Could not load your pods" error={error} onRetry={retry} />
      ) : pods === null ? (
        <Loading label="Loading pods…" />
      ) : pods.length === 0 ? (
        <EmptyState title="No pods yet">
          <p>A pod is a cloud dev environment: a terminal, an editor and previews of what it serves.</p>
          <button type="button" className="btn btn-primary" onClick={() => setCreating(true)}>
            Create your first pod
          </button>
        </EmptyState>
      ) : (
        <div className="table-wrap">
          <table className="table pods-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Tier</th>
                <th scope="col">Template</th>
                <th scope="col">Team / owner</th>
                <th scope="col">Age</th>
                <th scope="col">Last activity</th>
              </tr>
            </thead>
            <tbody>
              {pods.map((p) => (
                <tr key={p.id} data-pod={p.id}>
                  <td>
                    <Link to={podPath(p)} className="pod-link">
                      {p.name}
                    </Link>
                    <GithubBadges github={github.get(p.id)} />
                  </td>
                  <td>
                    <StateBadge state={p.state} reason={p.stateReason} /> <HostBadge status={p.hostStatus} />
                  </td>
                  <td>{p.tier?.name ?? "—"}</td>
                  <td>{p.template}</td>
                  <td>{p.team ? <span>{p.team}</span> : <span className="muted">{p.owner}</span>}</td>
                  <td>
                    <time dateTime={p.createdAt} title={formatDateTime(p.createdAt)}>
                      {formatRelative(p.createdAt, now)}
                    </time>
                  </td>
                  <td>
                    <time dateTime={p.lastActivityAt} title={formatDateTime(p.lastActivityAt)}>
                      {formatRelative(p.lastActivityAt, now)}
                    </time>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {creating && (
        <NewPodDialog
          onClose={() => setCreating(false)}
          onCreated={(pod) => {
            setCreating(false);
            setPods((prev) => (prev ? mergePodUpdate(prev, pod) : prev));
            navigate(podPath(pod));
          }}
        />
      )}
    </section>
  );
}

/** The `github` of the caller's pods, by id, from the REST pod list (the
 *  GraphQL pods carry none), read again every minute; a failure leaves the
 *  last answer (the badges are extras, the list works without them). */
function usePodGithub(tick: number): Map<string, PodGithub> {
  const api = useApi();
  const [links, setLinks] = useState<Map<string, PodGithub>>(() => new Map());
  useEffect(() => {
    let live = true;
    const load = () =>
      api.github.podLinks().then(
        (l) => live && setLinks(l),
        () => undefined,
      );
    void load();
    const timer = setInterval(load, GITHUB_POLL_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [api, tick]);
  return links;
}
