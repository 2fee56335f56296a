import { useState, type ReactNode } from "react";
import { useApi } from "../api/context";
import type { GithubDelivery, GithubRepository } from "../api/github";
import { ME } from "../api/queries";
import type { User } from "../api/types";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { useToasts } from "../components/Toasts";
import { formatDateTime, formatRelative } from "../lib/time";
import { useAsync } from "../lib/useAsync";

/** How many webhook deliveries the page shows. */
export const DELIVERIES_SHOWN = 50;

/** Instance administration: the GitHub App's installations, webhook
 *  deliveries and pull-request previews. Only instance administrators
 *  (`me.isAdmin`) see anything here; the server refuses the rest anyway. */
export function AdminPage() {
  const api = useApi();
  const me = useAsync((signal) => api.gql<{ me: User }>(ME, {}, { signal }), [api]);
  let body: ReactNode;
  if (me.loading && !me.data) body = <Loading />;
  else if (me.error) body = <ErrorState title="Could not tell whether you administer this instance" error={me.error} onRetry={me.reload} />;
  else if (!me.data?.me.isAdmin) body = <EmptyState title="Only instance administrators see this page" />;
  else body = <GithubAdminSection />;
  return (
    <section className="page settings admin" aria-labelledby="admin-heading">
      <h1 id="admin-heading">Administration</h1>
      {body}
    </section>
  );
}

function Card({ id, title, intro, children }: { id: string; title: string; intro?: ReactNode; children: ReactNode }) {
  return (
    <section id={id} className="card" aria-labelledby={`${id}-h`}>
      <h2 id={`${id}-h`}>{title}</h2>
      {intro && <p className="muted">{intro}</p>}
      {children}
    </section>
  );
}

/** The "GitHub" section (instance administrators). */
export function GithubAdminSection() {
  const api = useApi();
  const status = useAsync(() => api.github.status(), [api]);
  if (status.loading && !status.data) {
    return (
      <Card id="github" title="GitHub">
        <Loading label="Loading the GitHub App's state…" />
      </Card>
    );
  }
  if (status.error) {
    return (
      <Card id="github" title="GitHub">
        <ErrorState title="Could not read the GitHub App's state" error={status.error} onRetry={status.reload} />
      </Card>
    );
  }
  if (!status.data?.configured) {
    return (
      <Card id="github" title="GitHub">
        <p className="notice" role="note">
          The GitHub App is not configured. Create one on GitHub from here, or start the server with{" "}
          <code>--github-app-id</code> (the App's id) and <code>--github-app-key-file</code> (its private key, PEM), and set{" "}
          <code>PINACLE_GITHUB_WEBHOOK_SECRET</code> to the App's webhook secret.
        </p>
        <CreateApp />
      </Card>
    );
  }
  return (
    <Card id="github" title="GitHub" intro="The GitHub App: where it is installed, the repositories it reaches and the webhooks it received.">
      <Installations />
      <Repositories />
      <Deliveries />
    </Card>
  );
}

/** GitHub's manifest flow: the server makes the manifest, the browser
 *  posts it to GitHub (a form, as GitHub requires), GitHub sends it back
 *  to the server's callback once the App exists. */
export function CreateApp() {
  const api = useApi();
  const [organization, setOrganization] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const create = async () => {
    setBusy(true);
    setError(null);
    try {
      const m = await api.github.manifest(organization.trim() || undefined);
      const form = document.createElement("form");
      form.method = "POST";
      form.action = m.url;
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = "manifest";
      input.value = JSON.stringify(m.manifest);
      form.appendChild(input);
      document.body.appendChild(form);
      form.submit();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setBusy(false);
    }
  };
  return (
    <div className="create-app">
      <label>
        Organisation (empty: your own account){" "}
        <input value={organization} onChange={(e) => setOrganization(e.target.value)} placeholder="my-org" aria-label="Organisation" />
      </label>{" "}
      <button type="button" onClick={() => void create()} disabled={busy}>
        Create the GitHub App
      </button>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

function Installations() {
  const api = useApi();
  const list = useAsync(() => api.github.installations(), [api]);
  return (
    <>
      <h3>Installations</h3>
      {list.loading && !list.data ? (
        <Loading label="Loading installations…" />
      ) : list.error ? (
        <ErrorState title="Could not list the installations" error={list.error} onRetry={list.reload} />
      ) : list.data!.length === 0 ? (
        <EmptyState title="The App is installed nowhere yet" />
      ) : (
        <table className="table" aria-label="GitHub App installations">
          <thead>
            <tr>
              <th scope="col">Account</th>
              <th scope="col">Type</th>
              <th scope="col">Repositories</th>
              <th scope="col">State</th>
              <th scope="col">Installation</th>
            </tr>
          </thead>
          <tbody>
            {list.data!.map((i) => (
              <tr key={i.id}>
                <td>{i.account}</td>
                <td>{i.account_type}</td>
                <td className="num">{i.repositories}</td>
                <td>{i.suspended ? <span className="tag outcome-failed">suspended</span> : <span className="tag outcome-processed">active</span>}</td>
                <td className="muted">{i.id}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function Repositories() {
  const api = useApi();
  const toasts = useToasts();
  const list = useAsync(() => api.github.repositories(), [api]);
  const [busy, setBusy] = useState<Set<string>>(() => new Set());

  const toggle = async (r: GithubRepository, enabled: boolean) => {
    setBusy((b) => new Set(b).add(r.full_name));
    try {
      const updated = await api.github.setPreviews(r.full_name, enabled);
      list.setData((prev) => (prev ?? []).map((x) => (x.full_name === r.full_name ? { ...x, ...updated } : x)));
    } catch (e) {
      toasts.error(e);
    } finally {
      setBusy((b) => {
        const next = new Set(b);
        next.delete(r.full_name);
        return next;
      });
    }
  };

  return (
    <>
      <h3>Repositories</h3>
      <p className="muted">With PR previews on, each pull request opened on the repository gets a pod of its own, deleted when it closes.</p>
      {list.loading && !list.data ? (
        <Loading label="Loading repositories…" />
      ) : list.error ? (
        <ErrorState title="Could not list the repositories" error={list.error} onRetry={list.reload} />
      ) : list.data!.length === 0 ? (
        <EmptyState title="The App reaches no repository" />
      ) : (
        <table className="table" aria-label="GitHub repositories">
          <thead>
            <tr>
              <th scope="col">Repository</th>
              <th scope="col">Default branch</th>
              <th scope="col">Installation</th>
              <th scope="col">PR previews</th>
            </tr>
          </thead>
          <tbody>
            {list.data!.map((r) => (
              <tr key={r.full_name}>
                <td>
                  <span className="gh-repo-name">{r.full_name}</span>
                  {r.private && <span className="tag">private</span>}
                </td>
                <td>{r.default_branch}</td>
                <td className="muted">{r.installation_id}</td>
                <td>
                  <label className="check">
                    <input
                      type="checkbox"
                      role="switch"
                      aria-label={`PR previews for ${r.full_name}`}
                      checked={r.previews}
                      disabled={busy.has(r.full_name)}
                      onChange={(e) => void toggle(r, e.target.checked)}
                    />
                    <span aria-hidden="true">PR previews</span>
                  </label>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function Deliveries() {
  const api = useApi();
  const list = useAsync(() => api.github.deliveries(DELIVERIES_SHOWN), [api]);
  return (
    <>
      <div className="section-head">
        <h3>Webhook deliveries</h3>
        <button type="button" className="btn btn-small" onClick={list.reload} disabled={list.loading}>
          Refresh
        </button>
      </div>
      {list.loading && !list.data ? (
        <Loading label="Loading deliveries…" />
      ) : list.error ? (
        <ErrorState title="Could not list the deliveries" error={list.error} onRetry={list.reload} />
      ) : list.data!.length === 0 ? (
        <EmptyState title="No webhook received yet" />
      ) : (
        <div className="table-wrap">
          <table className="table deliveries" aria-label="Webhook deliveries">
            <thead>
              <tr>
                <th scope="col">Received</th>
                <th scope="col">Event</th>
                <th scope="col">Repository</th>
                <th scope="col">Outcome</th>
                <th scope="col">Detail</th>
                <th scope="col">Processed</th>
              </tr>
            </thead>
            <tbody>
              {list.data!.map((d) => (
                <DeliveryRow key={d.id} d={d} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

function DeliveryRow({ d }: { d: GithubDelivery }) {
  return (
    <tr data-delivery={d.id}>
      <td>
        <time dateTime={d.received_at} title={formatDateTime(d.received_at)}>
          {formatRelative(d.received_at)}
        </time>
      </td>
      <td>
        {d.event}
        {d.action ? `.${d.action}` : ""}
      </td>
      <td>{d.repository ?? <span className="muted">—</span>}</td>
      <td>
        <span className={`tag outcome outcome-${d.outcome}`} data-outcome={d.outcome}>
          {d.outcome}
        </span>
      </td>
      <td className="detail">{d.detail}</td>
      <td>
        {d.processed_at ? (
          <time dateTime={d.processed_at} title={formatDateTime(d.processed_at)}>
            {formatRelative(d.processed_at)}
          </time>
        ) : (
          <span className="muted">—</span>
        )}
      </td>
    </tr>
  );
}
