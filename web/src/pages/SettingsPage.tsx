import { useId, useState, type FormEvent } from "react";
import { useApi } from "../api/context";
import { errorFromResponse, errorMessage } from "../api/errors";
import {
  ADD_TEAM_MEMBER,
  CREATE_TEAM,
  CREATE_TOKEN,
  DELETE_SECRET,
  DELETE_SSH_KEY,
  REMOVE_TEAM_MEMBER,
  REVOKE_TOKEN,
  SECRETS,
  SET_SECRET,
  SET_TEAM_ROLE,
  SSH_KEYS,
  TEAMS,
  TOKENS,
} from "../api/queries";
import type { ApiToken, Role, Secret, SshKey, Team, TeamMember, TokenScope } from "../api/types";
import { CopyButton } from "../components/CopyButton";
import { EmptyState, ErrorState, Loading } from "../components/States";
import { useToasts } from "../components/Toasts";
import { formatDateTime, formatRelative } from "../lib/time";
import { useAsync } from "../lib/useAsync";

export function SettingsPage() {
  return (
    <section className="page settings" aria-labelledby="settings-heading">
      <h1 id="settings-heading">Settings</h1>
      <nav aria-label="Settings sections" className="settings-nav">
        <a href="#ssh-keys">SSH keys</a>
        <a href="#api-tokens">API tokens</a>
        <a href="#secrets">Secrets</a>
        <a href="#teams">Teams</a>
      </nav>
      <SshKeysSection />
      <TokensSection />
      <SecretsSection />
      <TeamsSection />
    </section>
  );
}

function Section({ id, title, children, intro }: { id: string; title: string; intro?: string; children: React.ReactNode }) {
  return (
    <section id={id} className="card" aria-labelledby={`${id}-h`}>
      <h2 id={`${id}-h`}>{title}</h2>
      {intro && <p className="muted">{intro}</p>}
      {children}
    </section>
  );
}

function useBusy() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, setError };
}

// ---------------------------------------------------------------- SSH keys

/** `POST /api/v1/ssh-keys/challenge`: what to sign to prove a key is yours. */
interface SshKeyChallenge {
  challenge: string;
  namespace: string;
  expires_at: string;
  sign_command: string;
}

export function SshKeysSection() {
  const api = useApi();
  const toasts = useToasts();
  const id = useId();
  const list = useAsync((signal) => api.gql<{ sshKeys: SshKey[] }>(SSH_KEYS, {}, { signal }), [api]);
  const [name, setName] = useState("");
  const [key, setKey] = useState("");
  const [challenge, setChallenge] = useState<SshKeyChallenge | null>(null);
  const [signature, setSignature] = useState("");
  const form = useBusy();

  const rest = async <T,>(path: string, body: unknown): Promise<T> => {
    const res = await api.session.fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw await errorFromResponse(res);
    return (await res.json()) as T;
  };

  const getChallenge = () => {
    void form.run(async () => {
      setChallenge(await rest<SshKeyChallenge>("/api/v1/ssh-keys/challenge", {}));
      setSignature("");
    });
  };

  const add = (e: FormEvent) => {
    e.preventDefault();
    if (!name.trim() || !key.trim()) {
      form.setError("Give the key a name and paste its public part.");
      return;
    }
    if (!challenge || !signature.trim()) {
      form.setError("Prove the key is yours: get a challenge, sign it with the command shown and paste the signature.");
      return;
    }
    void form.run(async () => {
      const k = await rest<{ id: string; name: string; fingerprint: string; algorithm: string; created_at: string }>("/api/v1/ssh-keys", {
        name: name.trim(),
        public_key: key.trim(),
        challenge: challenge.challenge,
        signature: signature.trim(),
      });
      const added: SshKey = { id: k.id, name: k.name, fingerprint: k.fingerprint, algorithm: k.algorithm, createdAt: k.created_at };
      list.setData((prev) => ({ sshKeys: [...(prev?.sshKeys ?? []), added] }));
      setName("");
      setKey("");
      setChallenge(null);
      setSignature("");
    });
  };

  const remove = async (k: SshKey) => {
    if (!window.confirm(`Delete the SSH key “${k.name}”?`)) return;
    try {
      await api.gql(DELETE_SSH_KEY, { id: k.id });
      list.setData((prev) => ({ sshKeys: (prev?.sshKeys ?? []).filter((x) => x.id !== k.id) }));
    } catch (e) {
      toasts.error(e);
    }
  };

  return (
    <Section id="ssh-keys" title="SSH keys" intro="Public keys that may sign in to your pods over SSH.">
      {list.loading && !list.data ? (
        <Loading label="Loading SSH keys…" />
      ) : list.error ? (
        <ErrorState title="Could not load SSH keys" error={list.error} onRetry={list.reload} />
      ) : list.data!.sshKeys.length === 0 ? (
        <EmptyState title="No SSH keys yet" />
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Fingerprint</th>
              <th scope="col">Added</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data!.sshKeys.map((k) => (
              <tr key={k.id}>
                <td>{k.name}</td>
                <td>
                  <code>{k.fingerprint}</code> <span className="muted">{k.algorithm}</span>
                </td>
                <td title={formatDateTime(k.createdAt)}>{formatRelative(k.createdAt)}</td>
                <td className="actions">
                  <button type="button" className="btn btn-small btn-danger-ghost" aria-label={`Delete SSH key ${k.name}`} onClick={() => remove(k)}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={add} className="inline-form" noValidate>
        <h3>Add a key</h3>
        <div className="field">
          <label htmlFor={`${id}-name`}>Key name</label>
          <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} placeholder="laptop" />
        </div>
        <div className="field">
          <label htmlFor={`${id}-key`}>Public key</label>
          <textarea
            id={`${id}-key`}
            rows={3}
            value={key}
            spellCheck={false}
            placeholder="ssh-ed25519 AAAA… you@laptop"
            onChange={(e) => setKey(e.target.value)}
          />
        </div>
        <div className="field">
          <span>Proof that the key is yours</span>
          <p className="muted">
            Sign a one-time challenge with the private key (or run <code>pinacle ssh-key add ~/.ssh/id_ed25519.pub</code>, which
            does all of this).
          </p>
          {challenge ? (
            <>
              <p>
                Run this (with the path of your key), then paste its output below. The challenge expires at{" "}
                {formatDateTime(challenge.expires_at)}.
              </p>
              <pre aria-label="Command that signs the challenge" style={{ whiteSpace: "pre-wrap", wordBreak: "break-all" }}>
                <code>{challenge.sign_command}</code>
              </pre>
              <CopyButton text={challenge.sign_command} label="Copy the signing command" />
            </>
          ) : (
            <button type="button" className="btn" onClick={getChallenge} disabled={form.busy}>
              Get a challenge
            </button>
          )}
        </div>
        {challenge && (
          <div className="field">
            <label htmlFor={`${id}-sig`}>Signature</label>
            <textarea
              id={`${id}-sig`}
              rows={6}
              value={signature}
              spellCheck={false}
              placeholder={"-----BEGIN SSH SIGNATURE-----\n…\n-----END SSH SIGNATURE-----"}
              onChange={(e) => setSignature(e.target.value)}
            />
          </div>
        )}
        {form.error && (
          <div role="alert" className="form-error">
            {form.error}
          </div>
        )}
        <button type="submit" className="btn btn-primary" disabled={form.busy}>
          Add key
        </button>
      </form>
    </Section>
  );
}

// ---------------------------------------------------------------- API tokens

export function TokensSection() {
  const api = useApi();
  const toasts = useToasts();
  const id = useId();
  const list = useAsync((signal) => api.gql<{ tokens: ApiToken[] }>(TOKENS, {}, { signal }), [api]);
  const [name, setName] = useState("");
  const [scope, setScope] = useState<TokenScope>("FULL");
  const [expiry, setExpiry] = useState("90");
  const [created, setCreated] = useState<{ token: string; name: string } | null>(null);
  const form = useBusy();

  const create = (e: FormEvent) => {
    e.preventDefault();
    if (!name.trim()) {
      form.setError("Give the token a name.");
      return;
    }
    void form.run(async () => {
      const d = await api.gql<{ createToken: { token: string; info: ApiToken } }>(CREATE_TOKEN, {
        name: name.trim(),
        scope,
        expiresInDays: expiry ? Number(expiry) : null,
      });
      setCreated({ token: d.createToken.token, name: d.createToken.info.name });
      list.setData((prev) => ({ tokens: [...(prev?.tokens ?? []), d.createToken.info] }));
      setName("");
    });
  };

  const revoke = async (t: ApiToken) => {
    if (!window.confirm(`Revoke the token “${t.name}”? Programs using it lose access at once.`)) return;
    try {
      await api.gql(REVOKE_TOKEN, { id: t.id });
      list.setData((prev) => ({ tokens: (prev?.tokens ?? []).filter((x) => x.id !== t.id) }));
    } catch (e) {
      toasts.error(e);
    }
  };

  return (
    <Section id="api-tokens" title="API tokens" intro="Tokens for the CLI, scripts and CI. A read token can look but not change anything.">
      {created && (
        <div className="token-once" role="region" aria-label="New token">
          <p className="warn-text">
            <strong>Copy your new token “{created.name}” now.</strong> It is shown only once and cannot be shown again.
          </p>
          <div className="copybox">
            <code aria-label="New API token">{created.token}</code>
            <CopyButton text={created.token} label="Copy token" />
          </div>
          <button type="button" className="btn btn-small" onClick={() => setCreated(null)}>
            I have copied it
          </button>
        </div>
      )}
      {list.loading && !list.data ? (
        <Loading label="Loading tokens…" />
      ) : list.error ? (
        <ErrorState title="Could not load tokens" error={list.error} onRetry={list.reload} />
      ) : list.data!.tokens.length === 0 ? (
        <EmptyState title="No API tokens" />
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Scope</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Expires</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data!.tokens.map((t) => (
              <tr key={t.id}>
                <td>{t.name}</td>
                <td>
                  <span className="tag">{t.scope === "READ" ? "read" : "full"}</span>
                </td>
                <td title={formatDateTime(t.createdAt)}>{formatRelative(t.createdAt)}</td>
                <td>{t.lastUsedAt ? formatRelative(t.lastUsedAt) : <span className="muted">never</span>}</td>
                <td>{t.expiresAt ? formatDateTime(t.expiresAt) : <span className="muted">never</span>}</td>
                <td className="actions">
                  <button type="button" className="btn btn-small btn-danger-ghost" aria-label={`Revoke token ${t.name}`} onClick={() => revoke(t)}>
                    Revoke
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={create} className="inline-form" noValidate>
        <h3>Create a token</h3>
        <div className="form-row">
          <div className="field">
            <label htmlFor={`${id}-name`}>Token name</label>
            <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} placeholder="ci" />
          </div>
          <div className="field">
            <label htmlFor={`${id}-scope`}>Scope</label>
            <select id={`${id}-scope`} value={scope} onChange={(e) => setScope(e.target.value as TokenScope)}>
              <option value="FULL">Full access</option>
              <option value="READ">Read only</option>
            </select>
          </div>
          <div className="field">
            <label htmlFor={`${id}-exp`}>Expires</label>
            <select id={`${id}-exp`} value={expiry} onChange={(e) => setExpiry(e.target.value)}>
              <option value="7">in 7 days</option>
              <option value="30">in 30 days</option>
              <option value="90">in 90 days</option>
              <option value="365">in a year</option>
              <option value="">never</option>
            </select>
          </div>
        </div>
        {form.error && (
          <div role="alert" className="form-error">
            {form.error}
          </div>
        )}
        <button type="submit" className="btn btn-primary" disabled={form.busy}>
          Create token
        </button>
      </form>
    </Section>
  );
}

// ---------------------------------------------------------------- Secrets

/** The server's rule (api/src/secrets.rs): an environment variable name. */
export function secretNameError(n: string): string | null {
  if (!/^[A-Z_][A-Z0-9_]{0,127}$/.test(n)) return "Use 1 to 128 characters of A-Z, 0-9 and _, not starting with a digit.";
  if (["PATH", "HOME", "TERM", "LANG"].includes(n) || n.startsWith("PINACLE_")) return `${n} is set by Pinacle itself.`;
  return null;
}

export function SecretsSection() {
  const api = useApi();
  const toasts = useToasts();
  const id = useId();
  const list = useAsync((signal) => api.gql<{ secrets: Secret[] }>(SECRETS, {}, { signal }), [api]);
  const [name, setName] = useState("");
  const [value, setValue] = useState("");
  const [saved, setSaved] = useState<string | null>(null);
  const form = useBusy();

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(null);
    const n = name.trim();
    const nameError = secretNameError(n);
    if (nameError) {
      form.setError(nameError);
      return;
    }
    if (!value) {
      form.setError("Enter the secret's value.");
      return;
    }
    const v = value;
    void form.run(async () => {
      try {
        const d = await api.gql<{ setSecret: Secret }>(SET_SECRET, { name: n, value: v });
        list.setData((prev) => ({
          secrets: [...(prev?.secrets ?? []).filter((s) => s.name !== d.setSecret.name), d.setSecret].sort((a, b) =>
            a.name.localeCompare(b.name),
          ),
        }));
        setName("");
        setSaved(d.setSecret.name);
      } finally {
        // the value leaves the page whether or not the save worked
        setValue("");
      }
    });
  };

  const remove = async (s: Secret) => {
    if (!window.confirm(`Delete the secret ${s.name}? Pods get it no more from their next start.`)) return;
    try {
      await api.gql(DELETE_SECRET, { name: s.name });
      list.setData((prev) => ({ secrets: (prev?.secrets ?? []).filter((x) => x.name !== s.name) }));
    } catch (e) {
      toasts.error(e);
    }
  };

  return (
    <Section
      id="secrets"
      title="Secrets"
      intro="Environment variables your pods start with. Values are stored sealed and never shown again, here or anywhere."
    >
      {list.loading && !list.data ? (
        <Loading label="Loading secrets…" />
      ) : list.error ? (
        <ErrorState title="Could not load secrets" error={list.error} onRetry={list.reload} />
      ) : list.data!.secrets.length === 0 ? (
        <EmptyState title="No secrets yet" />
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Scope</th>
              <th scope="col">Updated</th>
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {list.data!.secrets.map((s) => (
              <tr key={s.name}>
                <td>
                  <code>{s.name}</code>
                </td>
                <td>{s.scope}</td>
                <td title={formatDateTime(s.updatedAt)}>{formatRelative(s.updatedAt)}</td>
                <td className="actions">
                  <button
                    type="button"
                    className="btn btn-small"
                    aria-label={`Replace secret ${s.name}`}
                    onClick={() => {
                      setName(s.name);
                      setValue("");
                      document.getElementById(`${id}-value`)?.focus();
                    }}
                  >
                    Replace
                  </button>
                  <button type="button" className="btn btn-small btn-danger-ghost" aria-label={`Delete secret ${s.name}`} onClick={() => remove(s)}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={submit} className="inline-form" noValidate autoComplete="off">
        <h3>Add or replace a secret</h3>
        <div className="form-row">
          <div className="field">
            <label htmlFor={`${id}-name`}>Secret name</label>
            <input
              id={`${id}-name`}
              value={name}
              spellCheck={false}
              placeholder="OPENAI_API_KEY"
              onChange={(e) => setName(e.target.value)}
            />
          </div>
          <div className="field">
            <label htmlFor={`${id}-value`}>Value</label>
            <input
              id={`${id}-value`}
              type="password"
              autoComplete="new-password"
              value={value}
              onChange={(e) => setValue(e.target.value)}
            />
          </div>
        </div>
        {form.error && (
          <div role="alert" className="form-error">
            {form.error}
          </div>
        )}
        {saved && (
          <p role="status" className="ok-text">
            Saved {saved}.
          </p>
        )}
        <button type="submit" className="btn btn-primary" disabled={form.busy}>
          Save secret
        </button>
      </form>
    </Section>
  );
}

// ---------------------------------------------------------------- Teams

const ROLES: Role[] = ["OWNER", "ADMIN", "MEMBER", "VIEWER"];
const roleLabel = (r: Role) => r.charAt(0) + r.slice(1).toLowerCase();
const canManage = (r: Role) => r === "OWNER" || r === "ADMIN";

export function TeamsSection() {
  const api = useApi();
  const id = useId();
  const list = useAsync((signal) => api.gql<{ teams: Team[] }>(TEAMS, {}, { signal }), [api]);
  const [name, setName] = useState("");
  const form = useBusy();

  const create = (e: FormEvent) => {
    e.preventDefault();
    if (!name.trim()) {
      form.setError("Give the team a name.");
      return;
    }
    void form.run(async () => {
      const d = await api.gql<{ createTeam: Team }>(CREATE_TEAM, { name: name.trim() });
      list.setData((prev) => ({ teams: [...(prev?.teams ?? []), d.createTeam] }));
      setName("");
    });
  };

  const updateTeam = (teamId: string, fn: (t: Team) => Team) =>
    list.setData((prev) => ({ teams: (prev?.teams ?? []).map((t) => (t.id === teamId ? fn(t) : t)) }));

  return (
    <Section id="teams" title="Teams" intro="Pods of a team are shared with its members, by role.">
      {list.loading && !list.data ? (
        <Loading label="Loading teams…" />
      ) : list.error ? (
        <ErrorState title="Could not load teams" error={list.error} onRetry={list.reload} />
      ) : list.data!.teams.length === 0 ? (
        <EmptyState title="You are in no team" />
      ) : (
        <div className="teams">
          {list.data!.teams.map((t) => (
            <TeamCard key={t.id} team={t} onChange={(fn) => updateTeam(t.id, fn)} />
          ))}
        </div>
      )}
      <form onSubmit={create} className="inline-form" noValidate>
        <h3>Create a team</h3>
        <div className="input-row">
          <div className="field">
            <label htmlFor={`${id}-name`}>Team name</label>
            <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <button type="submit" className="btn btn-primary" disabled={form.busy}>
            Create team
          </button>
        </div>
        {form.error && (
          <div role="alert" className="form-error">
            {form.error}
          </div>
        )}
      </form>
    </Section>
  );
}

function TeamCard({ team, onChange }: { team: Team; onChange: (fn: (t: Team) => Team) => void }) {
  const api = useApi();
  const toasts = useToasts();
  const id = useId();
  const [user, setUser] = useState("");
  const [role, setRole] = useState<Role>("MEMBER");
  const form = useBusy();
  const manage = canManage(team.role);

  const add = (e: FormEvent) => {
    e.preventDefault();
    if (!user.trim()) {
      form.setError("Enter a user name.");
      return;
    }
    void form.run(async () => {
      const d = await api.gql<{ addTeamMember: TeamMember }>(ADD_TEAM_MEMBER, { team: team.name, user: user.trim(), role });
      onChange((t) => ({ ...t, members: [...t.members.filter((m) => m.userId !== d.addTeamMember.userId), d.addTeamMember] }));
      setUser("");
    });
  };

  const setMemberRole = async (m: TeamMember, r: Role) => {
    try {
      const d = await api.gql<{ setTeamRole: TeamMember }>(SET_TEAM_ROLE, { team: team.name, user: m.name, role: r });
      onChange((t) => ({ ...t, members: t.members.map((x) => (x.userId === m.userId ? d.setTeamRole : x)) }));
    } catch (e) {
      toasts.error(e);
    }
  };

  const remove = async (m: TeamMember) => {
    if (!window.confirm(`Remove ${m.name} from ${team.name}?`)) return;
    try {
      await api.gql(REMOVE_TEAM_MEMBER, { team: team.name, user: m.name });
      onChange((t) => ({ ...t, members: t.members.filter((x) => x.userId !== m.userId) }));
    } catch (e) {
      toasts.error(e);
    }
  };

  return (
    <article className="team" aria-labelledby={`${id}-h`}>
      <header className="team-head">
        <h3 id={`${id}-h`}>{team.name}</h3>
        <span className="tag">your role: {roleLabel(team.role)}</span>
      </header>
      <table className="table">
        <thead>
          <tr>
            <th scope="col">Member</th>
            <th scope="col">Role</th>
            <th scope="col">Since</th>
            {manage && (
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {team.members.map((m) => (
            <tr key={m.userId}>
              <td>{m.name}</td>
              <td>
                {manage ? (
                  <select aria-label={`Role of ${m.name}`} value={m.role} onChange={(e) => void setMemberRole(m, e.target.value as Role)}>
                    {ROLES.map((r) => (
                      <option key={r} value={r}>
                        {roleLabel(r)}
                      </option>
                    ))}
                  </select>
                ) : (
                  roleLabel(m.role)
                )}
              </td>
              <td title={formatDateTime(m.since)}>{formatRelative(m.since)}</td>
              {manage && (
                <td className="actions">
                  <button type="button" className="btn btn-small btn-danger-ghost" aria-label={`Remove ${m.name} from ${team.name}`} onClick={() => remove(m)}>
                    Remove
                  </button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {manage && (
        <form onSubmit={add} className="input-row" noValidate>
          <div className="field">
            <label htmlFor={`${id}-user`}>User name</label>
            <input id={`${id}-user`} value={user} onChange={(e) => setUser(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor={`${id}-role`}>Role</label>
            <select id={`${id}-role`} value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {roleLabel(r)}
                </option>
              ))}
            </select>
          </div>
          <button type="submit" className="btn" disabled={form.busy}>
            Add member
          </button>
          {form.error && (
            <div role="alert" className="form-error">
              {form.error}
            </div>
          )}
        </form>
      )}
    </article>
  );
}
