/** TypeScript mirrors of web/schema.graphql (only what the app reads). */

export type PodState =
  | "PENDING"
  | "PROVISIONING"
  | "RUNNING"
  | "STOPPING"
  | "STOPPED"
  | "STARTING"
  | "DELETING"
  | "DELETED"
  | "ERROR";
export type TabKind = "TERMINAL" | "POD" | "EXTERNAL";
export type Role = "OWNER" | "ADMIN" | "MEMBER" | "VIEWER";
export type TokenScope = "FULL" | "READ";

export interface User {
  id: string;
  name: string;
  isAdmin: boolean;
}

export interface Tier {
  name: string;
  vcpus: number;
  memoryBytes: number;
  diskBytes: number;
  pids?: number;
}

export interface Template {
  name: string;
  description: string;
  image: string;
  tier: string;
  pinacleYaml?: string;
}

export interface PodTab {
  name: string;
  kind: TabKind;
  service?: string | null;
  command?: string | null;
  port?: number | null;
  path?: string | null;
  url?: string | null;
}

export interface PodEvent {
  seq: number;
  podId: string;
  at: string;
  event: string;
  from: PodState | null;
  to: PodState;
  message: string;
}

export interface PodUsage {
  cpuPercent: number | null;
  memoryBytes: number | null;
  memoryLimitBytes: number;
  diskBytes: number | null;
  diskLimitBytes: number;
}

/** The fields the dashboard lists (and podUpdates sends). */
export interface PodSummary {
  id: string;
  name: string;
  owner: string;
  team: string | null;
  state: PodState;
  stateReason: string | null;
  /** The pod's host when it is not ready: cordoned, unreachable or lost. */
  hostStatus?: string | null;
  template: string;
  tier: Tier;
  createdAt: string;
  lastActivityAt: string;
}

export interface PodDetail extends PodSummary {
  image: string;
  runtime: string;
  publicPorts: number[];
  tabs: PodTab[];
  layout: unknown;
  sshCommand: string;
}

export interface Diagnostic {
  severity: string;
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
  suggestion: string | null;
}

export interface ConfigCheck {
  ok: boolean;
  diagnostics: Diagnostic[];
  canonical: string | null;
}

export interface RepositoryConfig {
  file: string;
  pinacleYaml: string;
  diagnostics: Diagnostic[];
}

export interface OpenLink {
  url: string;
  origin: string;
}

export interface ApiToken {
  id: string;
  name: string;
  scope: TokenScope;
  createdAt: string;
  lastUsedAt: string | null;
  expiresAt: string | null;
}

export interface Secret {
  name: string;
  scope: string;
  updatedAt: string;
}

export interface SshKey {
  id: string;
  name: string;
  fingerprint: string;
  algorithm: string;
  createdAt: string;
}

export interface TeamMember {
  userId: string;
  name: string;
  role: Role;
  since: string;
}

export interface Team {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  members: TeamMember[];
}

export interface Snapshot {
  id: string;
  name: string | null;
  createdAt: string;
  sizeBytes: number;
  auto: boolean;
}
