/** The GraphQL documents the app sends (see web/schema.graphql). */

const TIER = `name vcpus memoryBytes diskBytes`;
export const POD_SUMMARY = `id name owner team state stateReason hostStatus template tier { ${TIER} } createdAt lastActivityAt`;
const POD_DETAIL = `${POD_SUMMARY} image runtime publicPorts sshCommand layout
  tabs { name kind service command port path url }`;
const DIAGNOSTIC = `severity file line column path message suggestion`;

export const ME = `query Me { me { id name isAdmin } }`;

export const PODS = `query Pods { pods { ${POD_SUMMARY} } }`;
export const POD_UPDATES = `subscription PodUpdates { podUpdates { ${POD_SUMMARY} } }`;

export const POD = `query Pod($id: String!) { pod(id: $id) { ${POD_DETAIL} } }`;
export const POD_USAGE = `query PodUsage($id: String!) { pod(id: $id) { id state usage { cpuPercent memoryBytes memoryLimitBytes diskBytes diskLimitBytes } } }`;
export const POD_EVENTS = `subscription PodEvents($pod: String!, $after: Float) { podEvents(pod: $pod, after: $after) { seq podId at event from to message } }`;

export const NEW_POD_OPTIONS = `query NewPodOptions {
  templates { name description image tier pinacleYaml }
  tiers { ${TIER} }
  teams { id name role }
}`;
export const VALIDATE_CONFIG = `query ValidateConfig($yaml: String!) { validateConfig(yaml: $yaml) { ok canonical diagnostics { ${DIAGNOSTIC} } } }`;
export const REPOSITORY_CONFIG = `query RepositoryConfig($url: String!) { repositoryConfig(url: $url) { file pinacleYaml diagnostics { ${DIAGNOSTIC} } } }`;
export const CREATE_POD = `mutation CreatePod($input: CreatePodInput!) { createPod(input: $input) { ${POD_SUMMARY} } }`;

export const START_POD = `mutation StartPod($id: String!) { startPod(id: $id) { ${POD_SUMMARY} } }`;
export const STOP_POD = `mutation StopPod($id: String!) { stopPod(id: $id) { ${POD_SUMMARY} } }`;
export const DELETE_POD = `mutation DeletePod($id: String!) { deletePod(id: $id) { id state } }`;
export const CREATE_SNAPSHOT = `mutation CreateSnapshot($pod: String!, $name: String) { createSnapshot(pod: $pod, name: $name) { id name createdAt sizeBytes auto } }`;
export const OPEN_PORT = `mutation OpenPort($pod: String!, $port: Int!, $path: String, $embed: Boolean) { openPort(pod: $pod, port: $port, path: $path, embed: $embed) { url origin } }`;
export const SAVE_LAYOUT = `mutation SaveLayout($pod: String!, $layout: JSON!) { saveLayout(pod: $pod, layout: $layout) }`;

export const SSH_KEYS = `query SshKeys { sshKeys { id name fingerprint algorithm createdAt } }`;
export const DELETE_SSH_KEY = `mutation DeleteSshKey($id: String!) { deleteSshKey(id: $id) }`;

export const TOKENS = `query Tokens { tokens { id name scope createdAt lastUsedAt expiresAt } }`;
export const CREATE_TOKEN = `mutation CreateToken($name: String!, $scope: TokenScope, $expiresInDays: Int) {
  createToken(name: $name, scope: $scope, expiresInDays: $expiresInDays) { token info { id name scope createdAt lastUsedAt expiresAt } }
}`;
export const REVOKE_TOKEN = `mutation RevokeToken($id: String!) { revokeToken(id: $id) }`;

export const SECRETS = `query Secrets { secrets { name scope updatedAt } }`;
export const SET_SECRET = `mutation SetSecret($name: String!, $value: String!) { setSecret(name: $name, value: $value) { name scope updatedAt } }`;
export const DELETE_SECRET = `mutation DeleteSecret($name: String!) { deleteSecret(name: $name) }`;

const TEAM = `id name role createdAt members { userId name role since }`;
export const TEAMS = `query Teams { teams { ${TEAM} } }`;
export const CREATE_TEAM = `mutation CreateTeam($name: String!) { createTeam(name: $name) { ${TEAM} } }`;
export const ADD_TEAM_MEMBER = `mutation AddTeamMember($team: String!, $user: String!, $role: Role!) { addTeamMember(team: $team, user: $user, role: $role) { userId name role since } }`;
export const SET_TEAM_ROLE = `mutation SetTeamRole($team: String!, $user: String!, $role: Role!) { setTeamRole(team: $team, user: $user, role: $role) { userId name role since } }`;
export const REMOVE_TEAM_MEMBER = `mutation RemoveTeamMember($team: String!, $user: String!) { removeTeamMember(team: $team, user: $user) }`;
