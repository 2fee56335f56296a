import { useEffect, useId, useState } from "react";
import { useApi } from "../api/context";
import { errorMessage } from "../api/errors";
import type { DeployKeyAccess, GithubBranch, GithubRepository, GithubRepositoryInput } from "../api/github";
import { ErrorState, Loading } from "../components/States";

/** A repository, branch and deploy key chosen in the picker. */
export interface GithubPick {
  repository: string;
  branch: string;
  /** null: no deploy key. */
  deployKey: DeployKeyAccess | null;
}

/** The create request's `repository` for a pick. */
export function githubRepositoryInput(pick: GithubPick): GithubRepositoryInput {
  const input: GithubRepositoryInput = { github: pick.repository, branch: pick.branch };
  if (pick.deployKey) input.deploy_key = pick.deployKey;
  return input;
}

interface Props {
  /** Shown: the repositories are read the first time it is. */
  active: boolean;
  installUrl: string | null;
  value: GithubPick | null;
  onChange: (pick: GithubPick) => void;
}

/** The new-pod form's "From GitHub" source: the repositories the GitHub App
 *  reaches (filtered), one's branches, and a deploy key. */
export function GithubRepoPicker({ active, installUrl, value, onChange }: Props) {
  const api = useApi();
  const id = useId();
  const [repos, setRepos] = useState<GithubRepository[] | null>(null);
  const [reposError, setReposError] = useState<unknown>(null);
  const [reposTick, setReposTick] = useState(0);
  const [filter, setFilter] = useState("");
  const [branches, setBranches] = useState<GithubBranch[] | null>(null);
  const [branchesError, setBranchesError] = useState<string | null>(null);

  useEffect(() => {
    if (!active || repos) return;
    let live = true;
    setReposError(null);
    api.github.repositories().then(
      (r) => live && setRepos([...r].sort((a, b) => a.full_name.localeCompare(b.full_name))),
      (e) => live && setReposError(e),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api, active, reposTick]);

  const chosen = value?.repository ?? null;
  useEffect(() => {
    setBranches(null);
    setBranchesError(null);
    if (!chosen) return;
    let live = true;
    api.github.branches(chosen).then(
      (b) => live && setBranches(b),
      (e) => live && setBranchesError(errorMessage(e)),
    );
    return () => {
      live = false;
    };
  }, [api, chosen]);

  const installLink = installUrl ? (
    <a href={installUrl} target="_blank" rel="noreferrer">
      Install the GitHub App
    </a>
  ) : null;

  if (reposError) {
    return (
      <ErrorState
        title="Could not list your GitHub repositories"
        error={reposError}
        onRetry={() => {
          setReposError(null);
          setReposTick((t) => t + 1);
        }}
      />
    );
  }
  if (!repos) return active ? <Loading label="Loading your GitHub repositories…" /> : null;
  if (repos.length === 0) {
    return (
      <div className="notice" role="status">
        {installLink ? (
          <>
            The GitHub App is installed on no repository you can reach. {installLink} on your account or organisation, and
            choose the repositories it may read.
          </>
        ) : (
          <>The GitHub App is installed on no repository you can reach; an owner of your GitHub account or organisation installs it.</>
        )}
      </div>
    );
  }

  const needle = filter.trim().toLowerCase();
  const shown = needle ? repos.filter((r) => r.full_name.toLowerCase().includes(needle)) : repos;
  const choose = (r: GithubRepository) =>
    onChange({ repository: r.full_name, branch: r.default_branch, deployKey: value?.deployKey ?? null });

  // the chosen branch is offered while the list loads (or when it is not in it)
  const branchNames = (branches ?? []).map((b) => b.name);
  if (value && !branchNames.includes(value.branch)) branchNames.unshift(value.branch);
  const sha = branches?.find((b) => b.name === value?.branch)?.sha;

  return (
    <div className="gh-picker">
      <div className="field">
        <label htmlFor={`${id}-filter`}>Filter repositories</label>
        <input
          id={`${id}-filter`}
          type="search"
          value={filter}
          placeholder="owner/repository"
          autoComplete="off"
          spellCheck={false}
          onChange={(e) => setFilter(e.target.value)}
        />
      </div>
      <fieldset className="gh-repos">
        <legend>Repository</legend>
        {shown.length === 0 ? (
          <p className="muted">No repository matches “{filter.trim()}”.</p>
        ) : (
          <ul>
            {shown.map((r) => (
              <li key={r.full_name}>
                <label>
                  <input
                    type="radio"
                    name={`${id}-repo`}
                    value={r.full_name}
                    checked={chosen === r.full_name}
                    onChange={() => choose(r)}
                  />
                  <span className="gh-repo-name">{r.full_name}</span>
                  {r.private && <span className="tag">private</span>}
                </label>
              </li>
            ))}
          </ul>
        )}
      </fieldset>
      {installLink && <p className="field-help">Missing a repository? {installLink} on its account.</p>}

      {value && (
        <>
          <div className="field">
            <label htmlFor={`${id}-branch`}>Branch</label>
            <select
              id={`${id}-branch`}
              value={value.branch}
              aria-describedby={`${id}-branch-help`}
              onChange={(e) => onChange({ ...value, branch: e.target.value })}
            >
              {branchNames.map((b) => (
                <option key={b} value={b}>
                  {b}
                </option>
              ))}
            </select>
            <small id={`${id}-branch-help`} className={branchesError ? "field-error" : "field-help"}>
              {branchesError
                ? `Could not list the branches: ${branchesError}`
                : branches === null
                  ? "Loading the branches…"
                  : sha
                    ? `At ${sha.slice(0, 7)}. The repository's pinacle.yaml (or devcontainer.json) configures the pod.`
                    : "The repository's pinacle.yaml (or devcontainer.json) configures the pod."}
            </small>
          </div>
          <div className="field">
            <label className="check">
              <input
                type="checkbox"
                checked={value.deployKey !== null}
                onChange={(e) => onChange({ ...value, deployKey: e.target.checked ? "read" : null })}
              />
              Register a deploy key for this pod
            </label>
            {value.deployKey !== null && (
              <div role="radiogroup" aria-label="Deploy key access" className="gh-key-access">
                <label className="check">
                  <input
                    type="radio"
                    name={`${id}-key`}
                    checked={value.deployKey === "read"}
                    onChange={() => onChange({ ...value, deployKey: "read" })}
                  />
                  Read-only
                </label>
                <label className="check">
                  <input
                    type="radio"
                    name={`${id}-key`}
                    checked={value.deployKey === "write"}
                    onChange={() => onChange({ ...value, deployKey: "write" })}
                  />
                  Read-write (the pod may push)
                </label>
              </div>
            )}
            <small className="field-help">
              An SSH key of the pod's own, added to the repository's deploy keys, so git inside the pod reaches it without
              your credentials.
            </small>
          </div>
        </>
      )}
    </div>
  );
}
