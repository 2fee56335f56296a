/** The pod terminal WebSocket: binary frames carry keystrokes in and screen
 *  output out, text frames JSON control messages. Reconnects with the same
 *  session id after a network drop (the shell lives in the pod and the server
 *  replays recent output), never after the shell exited. */

export type TerminalStatus = "connecting" | "open" | "reconnecting" | "exited" | "failed" | "closed";

export const SESSION_RE = /^[A-Za-z0-9_-]{1,64}$/;
export const MAX_RECONNECTS = 10;

/** 1 s, 2 s, 4 s, ... capped at 30 s. `attempt` counts from 0. */
export function reconnectDelay(attempt: number): number {
  return Math.min(1000 * 2 ** Math.max(0, attempt), 30_000);
}

export function terminalUrl(
  loc: Pick<Location, "protocol" | "host">,
  pod: string,
  p: { rows: number; cols: number; session: string; command?: string | null },
): string {
  const q = new URLSearchParams({ rows: String(p.rows), cols: String(p.cols), session: p.session });
  if (p.command) q.set("command", p.command);
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/api/v1/pods/${encodeURIComponent(pod)}/terminal?${q.toString()}`;
}

export function terminalProtocols(accessToken: string): string[] {
  return ["pinacle.terminal", `bearer.${accessToken}`];
}

/** `{"exit":{"code":N}}` (or `{"exit":N}`); undefined when not an exit. */
export function parseExit(text: string): { code: number | null } | undefined {
  try {
    const msg = JSON.parse(text) as { exit?: unknown };
    if (msg && typeof msg === "object" && "exit" in msg) {
      const e = msg.exit;
      if (typeof e === "number") return { code: e };
      if (e && typeof e === "object" && "code" in e) {
        const c = (e as { code: unknown }).code;
        return { code: typeof c === "number" ? c : null };
      }
      return { code: null };
    }
  } catch {
    /* not JSON: ignore */
  }
  return undefined;
}

/** instanceof fails across realms (workers, test environments). */
function isArrayBuffer(v: unknown): v is ArrayBuffer {
  return v instanceof ArrayBuffer || Object.prototype.toString.call(v) === "[object ArrayBuffer]";
}

type WsCtor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface TerminalSocketOptions {
  pod: string;
  session: string;
  command?: string | null;
  rows: number;
  cols: number;
  getToken: () => Promise<string>;
  onData: (bytes: Uint8Array) => void;
  onStatus?: (status: TerminalStatus, detail?: { attempt?: number; delay?: number; code?: number | null }) => void;
  WebSocket?: WsCtor;
  location?: Pick<Location, "protocol" | "host">;
  maxReconnects?: number;
}

export class TerminalSocket {
  status: TerminalStatus = "connecting";
  exitCode: number | null = null;
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private rows: number;
  private cols: number;
  private stopped = false;
  private readonly encoder = new TextEncoder();

  constructor(private readonly opts: TerminalSocketOptions) {
    if (!SESSION_RE.test(opts.session)) throw new Error(`invalid terminal session id ${opts.session}`);
    this.rows = opts.rows;
    this.cols = opts.cols;
  }

  connect(): void {
    this.stopped = false;
    this.setStatus(this.attempt > 0 ? "reconnecting" : "connecting");
    void this.open();
  }

  private async open(): Promise<void> {
    let token: string;
    try {
      token = await this.opts.getToken();
    } catch {
      if (!this.stopped) this.dropped();
      return;
    }
    if (this.stopped) return;
    const Ctor = this.opts.WebSocket ?? WebSocket;
    const url = terminalUrl(this.opts.location ?? location, this.opts.pod, {
      rows: this.rows,
      cols: this.cols,
      session: this.opts.session,
      command: this.opts.command,
    });
    let ws: WebSocket;
    try {
      ws = new Ctor(url, terminalProtocols(token));
    } catch {
      this.dropped();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.setStatus("open");
      // the size may have changed while we were away
      this.sendControl({ resize: { rows: this.rows, cols: this.cols } });
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (this.ws !== ws) return;
      if (typeof ev.data === "string") {
        const exit = parseExit(ev.data);
        if (exit) {
          this.exitCode = exit.code;
          this.stopped = true;
          this.setStatus("exited", { code: exit.code });
        }
        return;
      }
      if (isArrayBuffer(ev.data)) this.opts.onData(new Uint8Array(ev.data));
      else if (ArrayBuffer.isView(ev.data)) this.opts.onData(new Uint8Array(ev.data.buffer, ev.data.byteOffset, ev.data.byteLength));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.status === "exited") return;
      if (this.stopped) {
        this.setStatus("closed");
        return;
      }
      this.dropped();
    };
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  private dropped(): void {
    const max = this.opts.maxReconnects ?? MAX_RECONNECTS;
    if (this.attempt >= max) {
      this.setStatus("failed");
      return;
    }
    const delay = reconnectDelay(this.attempt);
    this.attempt++;
    this.setStatus("reconnecting", { attempt: this.attempt, delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped) void this.open();
    }, delay);
  }

  /** Keystrokes (or pasted text) as UTF-8 bytes. Dropped while disconnected. */
  send(data: string | Uint8Array): boolean {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(typeof data === "string" ? this.encoder.encode(data) : data);
    return true;
  }

  resize(rows: number, cols: number): void {
    if (rows === this.rows && cols === this.cols) return;
    this.rows = rows;
    this.cols = cols;
    this.sendControl({ resize: { rows, cols } });
  }

  signal(n: number): void {
    this.sendControl({ signal: n });
  }

  private sendControl(msg: unknown): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg));
  }

  /** Ends the shell (SIGHUP) and closes: the tab was closed. */
  terminate(): void {
    this.signal(1);
    this.close();
  }

  /** Closes the socket and keeps the shell in the pod (page left). */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      try {
        ws.close(1000);
      } catch {
        /* already closing */
      }
    }
    if (this.status !== "exited") this.setStatus("closed");
  }

  /** Try again now after "failed" (resets the backoff). */
  retry(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.connect();
  }

  private setStatus(s: TerminalStatus, detail?: { attempt?: number; delay?: number; code?: number | null }): void {
    this.status = s;
    this.opts.onStatus?.(s, detail);
  }
}
