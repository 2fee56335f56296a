import { useCallback, useEffect, useId, useState } from "react";
import { useApi } from "../api/context";
import { errorMessage } from "../api/errors";
import type { Budget, Envelope, RouterModel, RouterModules } from "../api/router";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { Meter } from "../components/UsageBars";
import { formatRelative } from "../lib/time";

const usd = (v: number) => (v >= 0.01 || v === 0 ? `$${v.toFixed(2)}` : `$${v.toFixed(6)}`);

function BudgetMeter({ b }: { b: Budget }) {
  const used = b.spent_usd + b.reserved_usd;
  const pct = b.cap_usd > 0 ? Math.min(100, (used / b.cap_usd) * 100) : 100;
  const text = `${usd(b.spent_usd)} of ${usd(b.cap_usd)}${b.reserved_usd > 0 ? ` (${usd(b.reserved_usd)} reserved)` : ""}`;
  return <Meter label={`${b.kind} budget`} value={pct} text={text} />;
}

/** Spend by model over the tasks shown, as bars. */
function SpendChart({ tasks }: { tasks: Envelope[] }) {
  const by = new Map<string, number>();
  for (const t of tasks) {
    const m = t.engine.route?.model;
    if (m) by.set(m, (by.get(m) ?? 0) + t.usage.cost_usd);
  }
  const rows = [...by.entries()].sort((a, b) => b[1] - a[1]);
  if (rows.length === 0) return null;
  const max = Math.max(...rows.map((r) => r[1]), 1e-9);
  return (
    <figure className="card spend-chart" aria-label="Spend by model">
      <figcaption>Spend by model (these tasks)</figcaption>
      <svg width="100%" height={rows.length * 26} role="img" aria-label={rows.map(([m, v]) => `${m} ${usd(v)}`).join(", ")}>
        {rows.map(([m, v], i) => (
          <g key={m} transform={`translate(0, ${i * 26})`}>
            <text x="0" y="16" className="chart-label">
              {m}
            </text>
            <rect x="160" y="4" height="16" width={`${Math.max(0.5, (v / max) * 55)}%`} className="chart-bar" />
            <text x="98%" y="16" textAnchor="end" className="chart-value">
              {usd(v)}
            </text>
          </g>
        ))}
      </svg>
    </figure>
  );
}

function TaskRow({ t }: { t: Envelope }) {
  const [open, setOpen] = useState(false);
  const route = t.engine.route ? `${t.engine.route.model} on ${t.engine.route.provider}` : "—";
  return (
    <>
      <tr>
        <td>{formatRelative(t.created_at)}</td>
        <td>
          <span className={`tag status-${t.status}`}>{t.status}</span>
        </td>
        <td>{route}</td>
        <td>{t.engine.chosen_by.replace("_", " ")}</td>
        <td className="reason">{t.error ? `${t.engine.reason} — ${t.error.message}` : t.engine.reason}</td>
        <td className="num">
          {t.usage.tokens.input}+{t.usage.tokens.output}
          {t.usage.tokens.estimated && <abbr title="estimated: the provider reported no usage">~</abbr>}
        </td>
        <td className="num">{usd(t.usage.cost_usd)}</td>
        <td className="num">
          {t.usage.latency_ms} ms{t.usage.ttft_ms !== undefined ? ` (first ${t.usage.ttft_ms})` : ""}
        </td>
        <td>
          <button type="button" className="btn btn-ghost" aria-expanded={open} onClick={() => setOpen(!open)}>
            {open ? "Hide" : "Attempts"}
          </button>
        </td>
      </tr>
      {open && (
        <tr className="attempts">
          <td colSpan={9}>
            <ol>
              {t.engine.attempts.map((a, i) => (
                <li key={i}>
                  {a.model} on {a.provider}: {a.outcome}
                  {a.error ? ` — ${a.error}` : ""} ({a.latency_ms} ms{a.streamed ? ", streamed" : ""})
                </li>
              ))}
              {t.engine.attempts.length === 0 && <li>no attempt yet</li>}
            </ol>
          </td>
        </tr>
      )}
    </>
  );
}

/** The AI router: recent tasks with their route and reason, spend against
 *  budgets, and the models with their providers' health. */
export function RouterPage() {
  const api = useApi();
  const id = useId();
  const [tasks, setTasks] = useState<Envelope[] | null>(null);
  const [budgets, setBudgets] = useState<Budget[] | null>(null);
  const [models, setModels] = useState<RouterModel[] | null>(null);
  const [modules, setModules] = useState<RouterModules | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      const [t, u, m] = await Promise.all([api.router.tasks(), api.router.usage(), api.router.models()]);
      setTasks(t.map((x) => x.task));
      setBudgets(u.budgets);
      setModels(m);
      setError(null);
    } catch (err) {
      setError(errorMessage(err));
    }
    // admins only: everyone else gets null and sees no section
    try {
      setModules(await api.router.modules());
    } catch {
      setModules(null);
    }
  }, [api]);

  useEffect(() => {
    void load();
    const timer = window.setInterval(() => void load(), 10_000);
    return () => window.clearInterval(timer);
  }, [load]);

  return (
    <section className="page router" aria-labelledby={`${id}-h`}>
      <h1 id={`${id}-h`}>Router</h1>
      <p className="muted">
        Which model answered your agents' tasks, why, and what it cost. Pods reach the router at{" "}
        <code>http://pinacle.internal/v1</code> (their <code>OPENAI_BASE_URL</code>).
      </p>
      <button type="button" className="btn" onClick={() => void load()}>
        Refresh
      </button>
      {error && <ErrorState error={error} onRetry={() => void load()} title="The router could not be read" />}
      <h2>Budgets</h2>
      {budgets === null ? (
        <Loading />
      ) : budgets.length === 0 ? (
        <EmptyState title="No budget applies to you" />
      ) : (
        <div className="usage card" role="group" aria-label="Spend against budgets">
          {budgets.map((b) => (
            <BudgetMeter key={b.scope} b={b} />
          ))}
        </div>
      )}
      <h2>Recent tasks</h2>
      {tasks === null ? (
        <Loading />
      ) : tasks.length === 0 ? (
        <EmptyState title="No tasks yet" />
      ) : (
        <>
          <SpendChart tasks={tasks} />
          <table className="table">
            <thead>
              <tr>
                <th>When</th>
                <th>Status</th>
                <th>Route</th>
                <th>Chosen by</th>
                <th>Reason</th>
                <th>Tokens</th>
                <th>Cost</th>
                <th>Latency</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {tasks.map((t) => (
                <TaskRow key={t.id} t={t} />
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>Models</h2>
      {models === null ? (
        <Loading />
      ) : models.length === 0 ? (
        <EmptyState title="No models: the operator has not configured the router" />
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th>Model</th>
              <th>Kind</th>
              <th>Tier</th>
              <th>Provider</th>
              <th>$ / M tokens in · out</th>
              <th>Health</th>
            </tr>
          </thead>
          <tbody>
            {models.map((m) => (
              <tr key={m.id}>
                <td>{m.id}</td>
                <td>{m.aion.kind}</td>
                <td>{m.aion.tier ?? "—"}</td>
                <td>
                  {m.owned_by}
                  {m.aion.cloud ? " (cloud)" : ""}
                </td>
                <td className="num">{m.aion.price_per_mtok_usd ? `${m.aion.price_per_mtok_usd.input} · ${m.aion.price_per_mtok_usd.output}` : "—"}</td>
                <td>
                  {m.aion.health
                    ? `${m.aion.health.availability.replace("_", " ")}${m.aion.health.p95_ms !== null ? `, p95 ${m.aion.health.p95_ms} ms` : ""}`
                    : m.aion.privacy ?? "—"}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {modules && <ModulesSection m={modules} />}
    </section>
  );
}

/** The modules in force and the packages kept in quarantine (admins). */
function ModulesSection({ m }: { m: RouterModules }) {
  const quarantined = m.packages.filter((p) => p.state === "quarantined");
  const installed = new Map(m.packages.filter((p) => p.state === "installed").map((p) => [p.name, p]));
  return (
    <>
      <h2>Modules</h2>
      <p className="muted">
        {m.trusted_keys.length === 0
          ? "No signing key is trusted: every package installed goes to quarantine."
          : `Packages signed by ${m.trusted_keys.length === 1 ? "key" : "keys"} ${m.trusted_keys.join(", ")} are installed.`}
      </p>
      {m.modules.length === 0 ? (
        <EmptyState title="No modules" />
      ) : (
        <table className="table" aria-label="Modules">
          <thead>
            <tr>
              <th>Module</th>
              <th>Runtime</th>
              <th>From</th>
              <th>Signed by</th>
            </tr>
          </thead>
          <tbody>
            {m.modules.map((x) => (
              <tr key={x.name}>
                <td>
                  {x.name} {x.version}
                </td>
                <td>{x.runtime === "subprocess" ? `subprocess in gVisor (${x.image ?? "busybox"})` : "wasm"}</td>
                <td>{x.package ? installed.get(x.package)?.reference ?? "package" : "modules.yml"}</td>
                <td>{x.package ? installed.get(x.package)?.signed_by ?? "—" : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {quarantined.length > 0 && (
        <table className="table" aria-label="Quarantined packages">
          <thead>
            <tr>
              <th>Quarantined</th>
              <th>Reference</th>
              <th>Why</th>
            </tr>
          </thead>
          <tbody>
            {quarantined.map((p) => (
              <tr key={p.digest}>
                <td>{p.name}</td>
                <td>{p.reference}</td>
                <td>{p.reason}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
