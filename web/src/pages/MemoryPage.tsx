import { useEffect, useId, useState, type FormEvent } from "react";
import { useApi } from "../api/context";
import { errorMessage } from "../api/errors";
import { MEMORY_LAYERS, type Hit, type History, type Memory, type MemoryProject, type Verification } from "../api/memory";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { formatRelative } from "../lib/time";

/** The agents' memory of one project: browse by layer, search, a memory's
 *  history, and the logs' hash chains checked. */
export function MemoryPage() {
  const api = useApi();
  const id = useId();
  const initial = new URLSearchParams(window.location.search);
  const [project, setProject] = useState(initial.get("project") ?? "");
  const [team, setTeam] = useState(initial.get("team") ?? "");
  const [opened, setOpened] = useState<MemoryProject | null>(null);
  const [opening, setOpening] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const open = async (e?: FormEvent) => {
    e?.preventDefault();
    if (!project.trim()) {
      setError("Name a project: a repository such as github.com/owner/repo, or pod:ID for a pod without one.");
      return;
    }
    setOpening(true);
    setError(null);
    try {
      setOpened(await api.memory.open(project.trim(), team.trim() || undefined));
      const q = new URLSearchParams({ project: project.trim() });
      if (team.trim()) q.set("team", team.trim());
      window.history.replaceState(null, "", `/memory?${q}`);
    } catch (err) {
      setOpened(null);
      setError(errorMessage(err));
    } finally {
      setOpening(false);
    }
  };

  useEffect(() => {
    if (initial.get("project")) void open();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  return (
    <section className="page memory" aria-labelledby={`${id}-h`}>
      <h1 id={`${id}-h`}>Memory</h1>
      <p className="muted">
        What the agents in your pods remember, per project. Pods reach it at <code>http://pinacle.internal</code>; here you read it
        as they do.
      </p>
      <form className="inline-form card" onSubmit={open} noValidate>
        <div className="field">
          <label htmlFor={`${id}-project`}>Project</label>
          <input id={`${id}-project`} value={project} onChange={(e) => setProject(e.target.value)} placeholder="github.com/owner/repo" />
        </div>
        <div className="field">
          <label htmlFor={`${id}-team`}>Team (optional)</label>
          <input id={`${id}-team`} value={team} onChange={(e) => setTeam(e.target.value)} placeholder="your own memory" />
        </div>
        <button type="submit" className="btn btn-primary" disabled={opening}>
          {opening ? "Opening…" : "Open"}
        </button>
        {error && (
          <p className="field-error" role="alert">
            {error}
          </p>
        )}
      </form>
      {opened && <ProjectMemory key={`${opened.project}|${team}`} mem={opened} />}
    </section>
  );
}

function ProjectMemory({ mem }: { mem: MemoryProject }) {
  const [layer, setLayer] = useState<string>("all");
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<Hit[] | null>(null);
  const [memories, setMemories] = useState<Memory[] | null>(null);
  const [cursor, setCursor] = useState<string | undefined>();
  const [error, setError] = useState<unknown>(null);
  const [selected, setSelected] = useState<string | null>(null);
  const layers = layer === "all" ? [] : [layer];

  const load = async (more = false) => {
    setError(null);
    try {
      const page = await mem.list(layers, more ? cursor : undefined);
      setMemories((prev) => (more && prev ? [...prev, ...page.memories] : page.memories));
      setCursor(page.next_cursor);
    } catch (e) {
      setError(e);
    }
  };

  useEffect(() => {
    setHits(null);
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [layer, mem]);

  const search = async (e: FormEvent) => {
    e.preventDefault();
    if (!query.trim()) {
      setHits(null);
      return;
    }
    setError(null);
    try {
      setHits(await mem.search(query.trim(), layers));
    } catch (err) {
      setError(err);
    }
  };

  const shown: { memory: Memory; similarity?: number }[] | null = hits
    ? hits.map((h) => ({ memory: h.memory, similarity: h.similarity }))
    : (memories?.map((m) => ({ memory: m })) ?? null);

  return (
    <>
      <div className="card">
        <p className="muted">
          <strong>{mem.project}</strong> · your role: {mem.role}
        </p>
        <div role="tablist" aria-label="Layers" className="tabs">
          {["all", ...MEMORY_LAYERS].map((l) => (
            <button key={l} type="button" role="tab" aria-selected={layer === l} className={layer === l ? "btn btn-small btn-primary" : "btn btn-small"} onClick={() => setLayer(l)}>
              {l}
            </button>
          ))}
        </div>
        <form onSubmit={search} className="inline-form" role="search">
          <div className="field">
            <label htmlFor="memory-query">Search</label>
            <input id="memory-query" type="search" value={query} onChange={(e) => setQuery(e.target.value)} placeholder="by meaning and keywords" />
          </div>
          <button type="submit" className="btn">
            Search
          </button>
          {hits && (
            <button type="button" className="btn btn-ghost" onClick={() => { setHits(null); setQuery(""); }}>
              Clear
            </button>
          )}
        </form>
        {error ? (
          <ErrorState error={error} onRetry={() => void load()} />
        ) : shown === null ? (
          <Loading label="Loading memories…" />
        ) : shown.length === 0 ? (
          <EmptyState title={hits ? "Nothing matches" : "No memories here yet"}>
            <p className="muted">Agents add them through the MCP tools or the REST API.</p>
          </EmptyState>
        ) : (
          <table className="table" aria-label={hits ? "Search results" : "Memories"}>
            <thead>
              <tr>
                <th>Memory</th>
                <th>Layer</th>
                <th>{hits ? "Similarity" : "Version"}</th>
                <th>When</th>
              </tr>
            </thead>
            <tbody>
              {shown.map(({ memory: m, similarity }) => (
                <tr key={`${m.id}-${m.version}`} aria-selected={selected === m.id}>
                  <td>
                    <button type="button" className="btn btn-ghost memory-content" onClick={() => setSelected(m.id)} title="Show its history">
                      {m.content.length > 160 ? `${m.content.slice(0, 159)}…` : m.content}
                    </button>
                    {m.source && (
                      <span className="muted"> ({m.source.document} {m.source.start}–{m.source.end})</span>
                    )}
                  </td>
                  <td>
                    <span className="tag">{m.layer}</span>
                  </td>
                  <td>{similarity !== undefined ? similarity.toFixed(3) : `v${m.version}`}</td>
                  <td>{formatRelative(m.occurred_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        {!hits && cursor && (
          <button type="button" className="btn" onClick={() => void load(true)}>
            Load more
          </button>
        )}
      </div>
      {selected && <HistoryPanel mem={mem} id={selected} onClose={() => setSelected(null)} />}
      <ChainsPanel mem={mem} />
    </>
  );
}

function HistoryPanel({ mem, id, onClose }: { mem: MemoryProject; id: string; onClose: () => void }) {
  const [history, setHistory] = useState<History | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setHistory(null);
    mem.history(id).then(setHistory, setError);
  }, [mem, id]);
  return (
    <section className="card" aria-label="History">
      <h2>
        History <button type="button" className="btn btn-small btn-ghost" onClick={onClose}>Close</button>
      </h2>
      {error ? (
        <ErrorState error={error} />
      ) : !history ? (
        <Loading />
      ) : (
        <ol className="memory-history">
          {history.versions.map((v) => {
            const change = history.changes.find((c) => c.record.version === v.version && c.record.action !== "delete");
            return (
              <li key={v.version}>
                <strong>v{v.version}</strong> {v.current ? <span className="tag">current</span> : v.deleted_at ? <span className="tag">deleted</span> : <span className="tag">superseded</span>}{" "}
                <span className="muted">
                  {change ? `${change.record.action} by ${change.record.actor}, ` : ""}
                  {formatRelative(v.created_at)} · sha256 {v.content_hash.slice(0, 12)}
                </span>
                <p>{v.content}</p>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

function ChainsPanel({ mem }: { mem: MemoryProject }) {
  const [results, setResults] = useState<Verification[] | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const verify = async () => {
    setBusy(true);
    setError(null);
    try {
      setResults(await Promise.all([mem.verify("changelog"), mem.verify("events")]));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="card" aria-label="Tamper-evident logs">
      <h2>Tamper-evident logs</h2>
      <p className="muted">Every change and every access is hash-chained; checking recomputes each link and each memory's content hash.</p>
      <button type="button" className="btn" onClick={verify} disabled={busy}>
        {busy ? "Checking…" : "Verify chains"}
      </button>
      {error ? <ErrorState error={error} /> : null}
      {results && (
        <ul className="memory-chains">
          {results.map((v) =>
            v.ok ? (
              <li key={v.log}>
                <span className="tag">{v.log}</span> intact: {v.entries} entries, head <code>{v.head?.slice(0, 16)}</code>
              </li>
            ) : (
              <li key={v.log} role="alert">
                <span className="tag">{v.log}</span> <strong>broken at entry {v.broken_at ?? "?"}</strong>: {v.reason}
              </li>
            ),
          )}
        </ul>
      )}
    </section>
  );
}
