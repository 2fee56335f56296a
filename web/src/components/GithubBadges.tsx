import type { PodGithub } from "../api/github";
import { formatDateTime } from "../lib/time";

/** A commit's short form. */
export const shortSha = (sha: string) => sha.slice(0, 7);

/** What a pod cloned from GitHub shows: its repository, the pull request a
 *  preview pod is for, and a warning when the branch has moved on. Nothing
 *  for other pods. */
export function GithubBadges({ github }: { github?: PodGithub | null }) {
  if (!github) return null;
  const at = github.head_sha ? ` at ${shortSha(github.head_sha)}` : "";
  return (
    <span className="gh-badges">
      <span className="gh-repo" title={`Cloned from GitHub: ${github.repository}${at}${github.deploy_key ? ", with a deploy key" : ""}`}>
        {github.repository}
      </span>
      {github.pull_request !== null && <span className="badge badge-pr">PR #{github.pull_request}</span>}
      {github.behind && (
        <span
          className="badge badge-behind"
          data-behind={github.behind.sha}
          title={`The branch has commits the pod does not have, since ${formatDateTime(github.behind.since)}`}
        >
          behind origin: new commits at {shortSha(github.behind.sha)}
        </span>
      )}
    </span>
  );
}
