export const MAX_POD_NAME_LEN = 40;

const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** The server's pod-name rules (orchestrator/src/name.rs): 1 to 40 characters
 *  of a-z, 0-9 and '-', not starting or ending with '-', not a UUID.
 *  Returns an error message, or null when the name is valid. */
export function podNameError(raw: string): string | null {
  if (raw.length === 0) return "Name is required.";
  if (raw.length > MAX_POD_NAME_LEN) return `Use at most ${MAX_POD_NAME_LEN} characters (this is ${raw.length}).`;
  const bad = [...raw].find((c) => !/[a-z0-9-]/.test(c));
  if (bad !== undefined) {
    return bad >= "A" && bad <= "Z"
      ? "Use lowercase letters only."
      : `“${bad}” is not allowed: use lowercase letters a-z, digits 0-9 and '-'.`;
  }
  if (raw.startsWith("-") || raw.endsWith("-")) return "Name must start and end with a letter or digit.";
  if (UUID_RE.test(raw)) return "Name must not look like a pod id.";
  return null;
}

/** The key the API accepts for a pod (id, TEAM/NAME or NAME) as used in the
 *  workspace URL: team pods are addressed as team/name so that a personal
 *  pod with the same name never shadows them. */
export function podKey(pod: { name: string; team?: string | null }): string {
  return pod.team ? `${pod.team}/${pod.name}` : pod.name;
}

export function podPath(pod: { name: string; team?: string | null }): string {
  return "/pods/" + podKey(pod).split("/").map(encodeURIComponent).join("/");
}
