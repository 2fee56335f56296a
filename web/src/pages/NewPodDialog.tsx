import { useEffect, useId, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { useApi } from "../api/context";
import { ApiError, errorMessage } from "../api/errors";
import { CREATE_POD, NEW_POD_OPTIONS, REPOSITORY_CONFIG, VALIDATE_CONFIG } from "../api/queries";
import type { ConfigCheck, Diagnostic, PodSummary, RepositoryConfig, Role, Template, Tier } from "../api/types";
import { Dialog } from "../components/Dialog";
import { ErrorState, Loading } from "../components/States";
import { YamlField } from "../components/YamlField";
import { diagnosticsFromDetails, formatDiagnostic, hasErrors } from "../lib/diagnostics";
import { formatBytes } from "../lib/format";
import { podNameError } from "../lib/podName";
import { useAsync } from "../lib/useAsync";
import { GithubRepoPicker, githubRepositoryInput, type GithubPick } from "./GithubRepoPicker";

type Source = "template" | "git" | "github" | "yaml";
const SOURCES: { id: Source; label: string }[] = [
  { id: "template", label: "Template" },
  { id: "git", label: "Git repository" },
  { id: "github", label: "From GitHub" },
  { id: "yaml", label: "YAML" },
];

interface Options {
  templates: Template[];
  tiers: Tier[];
  teams: { id: string; name: string; role: Role }[];
}

export const VALIDATE_DEBOUNCE_MS = 400;

/** A pod name from a repository's URL or `owner/repo` ("" when none fits). */
function nameFromRepository(url: string): string {
  const guess = url.replace(/\.git$/, "").split(/[/:]/).filter(Boolean).pop() ?? "";
  return guess.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
}

export function tierLabel(t: Tier): string {
  return `${t.name} — ${t.vcpus} vCPU, ${formatBytes(t.memoryBytes)} memory, ${formatBytes(t.diskBytes)} disk`;
}

interface Props {
  onClose: () => void;
  onCreated: (pod: PodSummary) => void;
}

export function NewPodDialog({ onClose, onCreated }: Props) {
  const api = useApi();
  const id = useId();
  const options = useAsync((signal) => api.gql<Options>(NEW_POD_OPTIONS, {}, { signal }), [api]);
  // the GitHub App: without it (or when the server cannot say), the form is as before
  const github = useAsync(() => api.github.status().catch(() => null), [api]);
  const githubConfigured = github.data?.configured === true;
  const installUrl = github.data?.install_url || null;
  const sources = githubConfigured ? SOURCES : SOURCES.filter((s) => s.id !== "github");

  const [source, setSource] = useState<Source>("template");
  const [name, setName] = useState("");
  const [nameTouched, setNameTouched] = useState(false);
  const [tier, setTier] = useState("");
  const [team, setTeam] = useState("");
  const [template, setTemplate] = useState("");

  const [repoUrl, setRepoUrl] = useState("");
  const [repoBranch, setRepoBranch] = useState("");
  const [image, setImage] = useState("");
  const [repoBusy, setRepoBusy] = useState(false);
  const [repoError, setRepoError] = useState<string | null>(null);
  const [repoRead, setRepoRead] = useState<{ url: string; file: string } | null>(null);
  const [githubPick, setGithubPick] = useState<GithubPick | null>(null);

  const [yaml, setYaml] = useState("");
  const [diagnostics, setDiagnostics] = useState<Diagnostic[]>([]);
  const [validating, setValidating] = useState(false);
  const [validateError, setValidateError] = useState<string | null>(null);

  const [submitting, setSubmitting] = useState(false);
  const [submitError, setSubmitError] = useState<string | null>(null);
  const [serverDiagnostics, setServerDiagnostics] = useState<Diagnostic[]>([]);

  const templates = options.data?.templates ?? [];
  useEffect(() => {
    if (!template && templates.length > 0) setTemplate(templates[0]!.name);
  }, [template, templates]);

  // Live validation of the YAML, debounced; answers to older text are dropped.
  const seq = useRef(0);
  useEffect(() => {
    const mine = ++seq.current;
    if (!yaml.trim()) {
      setDiagnostics([]);
      setValidating(false);
      setValidateError(null);
      return;
    }
    setValidating(true);
    const timer = setTimeout(() => {
      api.gql<{ validateConfig: ConfigCheck }>(VALIDATE_CONFIG, { yaml }).then(
        (d) => {
          if (mine !== seq.current) return;
          setDiagnostics(d.validateConfig.diagnostics);
          setValidateError(null);
          setValidating(false);
        },
        (e) => {
          if (mine !== seq.current) return;
          if (e instanceof ApiError && e.code === "invalid_config") setDiagnostics(diagnosticsFromDetails(e.details));
          else setValidateError(errorMessage(e));
          setValidating(false);
        },
      );
    }, VALIDATE_DEBOUNCE_MS);
    return () => clearTimeout(timer);
  }, [yaml, api]);

  const nameError = podNameError(name);
  const showNameError = nameTouched && nameError !== null;
  const yamlHasErrors = hasErrors(diagnostics);
  const selectedTemplate = templates.find((t) => t.name === template);

  let blocker: string | null = null;
  if (nameError) blocker = nameError;
  else if (source === "template" && !template) blocker = "Choose a template.";
  else if (source === "git" && !repoUrl.trim()) blocker = "Enter the repository's URL.";
  else if (source === "github" && !githubPick) blocker = "Choose a repository.";
  else if (source === "yaml" && !yaml.trim()) blocker = "Write or paste a pinacle.yaml.";
  else if (source === "yaml" && yamlHasErrors) blocker = "Fix the errors in pinacle.yaml first.";
  const canCreate = blocker === null && !submitting;

  // a pod name from the repository's, when none is typed yet
  const guessName = (url: string) => {
    if (name) return;
    const clean = nameFromRepository(url);
    if (clean && !podNameError(clean)) setName(clean);
  };

  const readRepository = async () => {
    const url = repoUrl.trim();
    if (!url) {
      setRepoError("Enter the repository's URL.");
      return;
    }
    setRepoBusy(true);
    setRepoError(null);
    try {
      const d = await api.gql<{ repositoryConfig: RepositoryConfig }>(REPOSITORY_CONFIG, { url });
      setYaml(d.repositoryConfig.pinacleYaml);
      setDiagnostics(d.repositoryConfig.diagnostics ?? []);
      setRepoRead({ url, file: d.repositoryConfig.file });
      setSource("yaml");
      guessName(url);
    } catch (e) {
      setRepoError(errorMessage(e));
    } finally {
      setRepoBusy(false);
    }
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setNameTouched(true);
    if (!canCreate) return;
    setSubmitting(true);
    setSubmitError(null);
    setServerDiagnostics([]);
    const input: Record<string, unknown> = { name };
    if (tier) input.tier = tier;
    if (team) input.team = team;
    if (source === "template") input.template = template;
    // another image than the template's: a registry reference (pinned to
    // its digest when the pod is created) or one of this host's
    if (source === "template" && image.trim()) input.image = image.trim();
    else if (source === "yaml") input.config = yaml;
    // cloned into /workspace inside the pod; without a config, the
    // repository's own pinacle.yaml (or devcontainer.json) configures it
    const repoFrom = source === "git" ? repoUrl.trim() : source === "yaml" ? repoRead?.url : undefined;
    if (repoFrom) {
      const repository: Record<string, string> = { url: repoFrom };
      if (repoBranch.trim()) repository.branch = repoBranch.trim();
      input.repository = repository;
    }
    // through the GitHub App (its token clones a private one)
    if (source === "github" && githubPick) input.repository = githubRepositoryInput(githubPick);
    try {
      const d = await api.gql<{ createPod: PodSummary }>(CREATE_POD, { input });
      onCreated(d.createPod);
    } catch (err) {
      setSubmitting(false);
      if (err instanceof ApiError && err.code === "invalid_config") {
        const ds = diagnosticsFromDetails(err.details);
        setServerDiagnostics(ds);
        if (source === "yaml") setDiagnostics(ds);
        setSubmitError(ds.length ? "The configuration has problems:" : err.message);
      } else {
        setSubmitError(errorMessage(err));
      }
    }
  };

  const onTabKey = (e: KeyboardEvent<HTMLButtonElement>, i: number) => {
    const delta = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (!delta) return;
    e.preventDefault();
    const next = sources[(i + delta + sources.length) % sources.length]!;
    setSource(next.id);
    document.getElementById(`${id}-tab-${next.id}`)?.focus();
  };

  return (
    <Dialog title="New pod" onClose={onClose} wide>
      {options.loading && !options.data ? (
        <Loading label="Loading templates and tiers…" />
      ) : options.error ? (
        <ErrorState title="Could not load templates" error={options.error} onRetry={options.reload} />
      ) : (
        <form onSubmit={submit} noValidate className="newpod-form">
          <div className="form-row">
            <div className="field">
              <label htmlFor={`${id}-name`}>Name</label>
              <input
                id={`${id}-name`}
                value={name}
                required
                autoFocus
                maxLength={63}
                autoComplete="off"
                spellCheck={false}
                placeholder="my-app"
                aria-invalid={showNameError}
                aria-describedby={`${id}-name-help`}
                onChange={(e) => setName(e.target.value)}
                onBlur={() => name && setNameTouched(true)}
              />
              <small id={`${id}-name-help`} className={showNameError ? "field-error" : "field-help"}>
                {showNameError ? nameError : "Lowercase letters, digits and '-'; up to 40 characters."}
              </small>
            </div>
            <div className="field">
              <label htmlFor={`${id}-tier`}>Tier</label>
              <select id={`${id}-tier`} value={tier} onChange={(e) => setTier(e.target.value)}>
                <option value="">
                  {source === "template" && selectedTemplate ? `Template default (${selectedTemplate.tier})` : "Default"}
                </option>
                {(options.data?.tiers ?? []).map((t) => (
                  <option key={t.name} value={t.name}>
                    {tierLabel(t)}
                  </option>
                ))}
              </select>
            </div>
            <div className="field">
              <label htmlFor={`${id}-team`}>Team</label>
              <select id={`${id}-team`} value={team} onChange={(e) => setTeam(e.target.value)}>
                <option value="">Personal (no team)</option>
                {(options.data?.teams ?? []).map((t) => (
                  <option key={t.id} value={t.name}>
                    {t.name}
                  </option>
                ))}
              </select>
            </div>
          </div>

          <div role="tablist" aria-label="Source" className="subtabs">
            {sources.map((s, i) => (
              <button
                key={s.id}
                id={`${id}-tab-${s.id}`}
                type="button"
                role="tab"
                aria-selected={source === s.id}
                aria-controls={`${id}-panel-${s.id}`}
                tabIndex={source === s.id ? 0 : -1}
                className={source === s.id ? "subtab active" : "subtab"}
                onClick={() => setSource(s.id)}
                onKeyDown={(e) => onTabKey(e, i)}
              >
                {s.label}
              </button>
            ))}
          </div>

          <div
            role="tabpanel"
            id={`${id}-panel-template`}
            aria-labelledby={`${id}-tab-template`}
            hidden={source !== "template"}
            className="source-panel"
          >
            {templates.length === 0 ? (
              <p className="muted">This server has no templates; use a Git repository or YAML.</p>
            ) : (
              <>
                <div className="field">
                  <label htmlFor={`${id}-template`}>Choose a template</label>
                  <select id={`${id}-template`} value={template} onChange={(e) => setTemplate(e.target.value)}>
                    {templates.map((t) => (
                      <option key={t.name} value={t.name}>
                        {t.name}
                      </option>
                    ))}
                  </select>
                </div>
                <div className="field">
                  <label htmlFor={`${id}-image`}>Image (optional)</label>
                  <input
                    id={`${id}-image`}
                    value={image}
                    placeholder={selectedTemplate ? `the template's: ${selectedTemplate.image}` : "python:3.13"}
                    autoComplete="off"
                    spellCheck={false}
                    maxLength={255}
                    aria-describedby={`${id}-image-help`}
                    onChange={(e) => setImage(e.target.value)}
                  />
                  <small id={`${id}-image-help`} className="field-help">
                    Any registry image (python:3.13, ghcr.io/owner/image:tag), pulled on the pod's host and pinned to its
                    digest; private registries use your secrets NAME_CONTAINER_REGISTRY_SERVER, _USER and _PASSWORD.
                  </small>
                </div>
                {selectedTemplate && (
                  <div className="template-info">
                    <p>{selectedTemplate.description}</p>
                    <p className="muted">
                      Image <code>{selectedTemplate.image}</code>, tier <code>{selectedTemplate.tier}</code>
                    </p>
                    {selectedTemplate.pinacleYaml && (
                      <button
                        type="button"
                        className="btn btn-small"
                        onClick={() => {
                          setYaml(selectedTemplate.pinacleYaml ?? "");
                          setSource("yaml");
                        }}
                      >
                        Customise as YAML
                      </button>
                    )}
                  </div>
                )}
              </>
            )}
          </div>

          <div
            role="tabpanel"
            id={`${id}-panel-git`}
            aria-labelledby={`${id}-tab-git`}
            hidden={source !== "git"}
            className="source-panel"
          >
            <div className="field">
              <label htmlFor={`${id}-repo`}>Repository URL</label>
              <div className="input-row">
                <input
                  id={`${id}-repo`}
                  type="url"
                  value={repoUrl}
                  placeholder="https://github.com/owner/repo"
                  aria-describedby={`${id}-repo-help`}
                  onChange={(e) => setRepoUrl(e.target.value)}
                  onBlur={() => repoUrl.trim() && guessName(repoUrl.trim())}
                  onKeyDown={(e) => {
                    if (e.key === "Enter") {
                      e.preventDefault();
                      void readRepository();
                    }
                  }}
                />
                <button type="button" className="btn" onClick={readRepository} disabled={repoBusy}>
                  {repoBusy ? "Reading…" : "Read configuration"}
                </button>
              </div>
              <small id={`${id}-repo-help`} className="field-help">
                Cloned into /workspace inside the pod; its pinacle.yaml (or .devcontainer/devcontainer.json) configures
                the pod. For a private repository, store a token as the secret GIT_TOKEN. "Read configuration" lets you
                edit the configuration first (GitHub repositories).
              </small>
              {!githubConfigured && installUrl && (
                <small className="field-help">
                  <a href={installUrl} target="_blank" rel="noreferrer">
                    Install the GitHub App
                  </a>
                </small>
              )}
            </div>
            <div className="field">
              <label htmlFor={`${id}-branch`}>Branch</label>
              <input
                id={`${id}-branch`}
                value={repoBranch}
                placeholder="default branch"
                autoComplete="off"
                spellCheck={false}
                maxLength={255}
                onChange={(e) => setRepoBranch(e.target.value)}
              />
            </div>
            {repoError && (
              <div role="alert" className="form-error">
                {repoError}
              </div>
            )}
          </div>

          {githubConfigured && (
            <div
              role="tabpanel"
              id={`${id}-panel-github`}
              aria-labelledby={`${id}-tab-github`}
              hidden={source !== "github"}
              className="source-panel"
            >
              <GithubRepoPicker
                active={source === "github"}
                installUrl={installUrl}
                value={githubPick}
                onChange={(pick) => {
                  // another repository: its name, unless one was typed
                  if (pick.repository !== githubPick?.repository) {
                    const next = nameFromRepository(pick.repository);
                    const guessed = !name || (githubPick !== null && name === nameFromRepository(githubPick.repository));
                    if (guessed && next && !podNameError(next)) setName(next);
                  }
                  setGithubPick(pick);
                }}
              />
            </div>
          )}

          <div
            role="tabpanel"
            id={`${id}-panel-yaml`}
            aria-labelledby={`${id}-tab-yaml`}
            hidden={source !== "yaml"}
            className="source-panel"
          >
            {repoRead && (
              <p className="notice" role="status">
                Read <code>{repoRead.file}</code> from {repoRead.url}; the repository is cloned into /workspace.
              </p>
            )}
            <YamlField
              label="pinacle.yaml"
              value={yaml}
              onChange={(v) => {
                setYaml(v);
                setServerDiagnostics([]);
              }}
              diagnostics={diagnostics}
              validating={validating}
              placeholder={'version: "1.0"\ntemplate: nodejs-blank\nprocesses:\n  - name: app\n    startCommand: npm run dev\n    url: http://localhost:3000'}
            />
            {validateError && <p className="field-error">Could not check the file: {validateError}</p>}
          </div>

          {submitError && (
            <div role="alert" className="form-error">
              <p>{submitError}</p>
              {serverDiagnostics.length > 0 && source !== "yaml" && (
                <ul className="diagnostics">
                  {serverDiagnostics.map((d, i) => (
                    <li key={i}>{formatDiagnostic(d)}</li>
                  ))}
                </ul>
              )}
            </div>
          )}

          <div className="dialog-actions">
            {blocker && blocker !== nameError && <span className="muted blocker">{blocker}</span>}
            <button type="button" className="btn btn-ghost" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" className="btn btn-primary" disabled={!canCreate}>
              {submitting ? "Creating…" : "Create"}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
