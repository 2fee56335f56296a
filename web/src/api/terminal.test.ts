import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { TerminalSocket, reconnectDelay, terminalUrl, type TerminalStatus } from "./terminal";

class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  readyState = 0;
  binaryType = "blob";
  sent: (string | Uint8Array)[] = [];
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  closedWith: number | null = null;
  constructor(
    public url: string,
    public protocols: string[],
  ) {
    FakeWebSocket.instances.push(this);
  }
  send(d: string | Uint8Array) {
    this.sent.push(d);
  }
  close(code = 1000) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // server side
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  message(data: unknown) {
    this.onmessage?.({ data });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
  }
}

const last = () => FakeWebSocket.instances[FakeWebSocket.instances.length - 1]!;
const flush = () => new Promise<void>((r) => queueMicrotask(r));

function socket(extra: Partial<ConstructorParameters<typeof TerminalSocket>[0]> = {}) {
  const statuses: TerminalStatus[] = [];
  const data: string[] = [];
  const s = new TerminalSocket({
    pod: "my-pod",
    session: "sess-1",
    rows: 24,
    cols: 80,
    getToken: async () => "tok",
    onData: (b) => data.push(new TextDecoder().decode(b)),
    onStatus: (st) => statuses.push(st),
    WebSocket: FakeWebSocket as unknown as typeof WebSocket,
    location: { protocol: "https:", host: "pinacle.test" },
    ...extra,
  });
  return { s, statuses, data };
}

beforeEach(() => {
  FakeWebSocket.instances = [];
  vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe("terminal socket", () => {
  it("connects with the session id and the bearer subprotocol", async () => {
    const { s, data } = socket({ command: "claude --resume" });
    s.connect();
    await flush();
    const ws = last();
    expect(ws.url).toBe("wss://pinacle.test/api/v1/pods/my-pod/terminal?rows=24&cols=80&session=sess-1&command=claude+--resume");
    expect(ws.protocols).toEqual(["pinacle.terminal", "bearer.tok"]);
    expect(ws.binaryType).toBe("arraybuffer");
    ws.open();
    ws.message(new TextEncoder().encode("hello").buffer);
    expect(data).toEqual(["hello"]);
    s.send("ls\r");
    expect(ws.sent.at(-1)).toEqual(new TextEncoder().encode("ls\r"));
    s.resize(30, 100);
    expect(ws.sent.at(-1)).toBe('{"resize":{"rows":30,"cols":100}}');
  });

  it("reconnects after a drop with backoff and the same session", async () => {
    const { s, statuses } = socket();
    s.connect();
    await flush();
    last().open();
    s.resize(40, 120);
    last().drop();
    expect(s.status).toBe("reconnecting");
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(last().url).toContain("session=sess-1");
    expect(last().url).toContain("rows=40&cols=120");
    // fails again: the next wait is 2 s
    last().drop();
    await vi.advanceTimersByTimeAsync(1999);
    expect(FakeWebSocket.instances).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(3);
    last().open();
    expect(statuses).toEqual(["connecting", "open", "reconnecting", "reconnecting", "open"]);
  });

  it("gives up after the bounded number of tries", async () => {
    const { s } = socket({ maxReconnects: 3 });
    s.connect();
    await flush();
    for (let i = 0; i < 3; i++) {
      last().drop();
      await vi.advanceTimersByTimeAsync(reconnectDelay(i));
    }
    last().drop();
    expect(s.status).toBe("failed");
    expect(FakeWebSocket.instances).toHaveLength(4);
    s.retry();
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(5);
  });

  it("does not reconnect after the shell exited", async () => {
    const { s } = socket();
    s.connect();
    await flush();
    last().open();
    last().message('{"exit":{"code":3}}');
    expect(s.status).toBe("exited");
    expect(s.exitCode).toBe(3);
    last().drop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(s.status).toBe("exited");
  });

  it("closing the tab sends SIGHUP then closes; leaving the page only closes", async () => {
    const a = socket();
    a.s.connect();
    await flush();
    const ws = last();
    ws.open();
    a.s.terminate();
    expect(ws.sent.at(-1)).toBe('{"signal":1}');
    expect(ws.closedWith).toBe(1000);
    ws.drop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);

    const b = socket();
    b.s.connect();
    await flush();
    const ws2 = last();
    ws2.open();
    b.s.close();
    expect(ws2.sent.some((m) => typeof m === "string" && m.includes("signal"))).toBe(false);
    expect(b.s.status).toBe("closed");
  });

  it("builds ws: URLs on plain http and refuses bad session ids", () => {
    expect(terminalUrl({ protocol: "http:", host: "h:7070" }, "p", { rows: 1, cols: 2, session: "s" })).toBe(
      "ws://h:7070/api/v1/pods/p/terminal?rows=1&cols=2&session=s",
    );
    expect(() => socket({ session: "no spaces allowed" })).toThrow();
    expect([0, 1, 2, 3, 10].map(reconnectDelay)).toEqual([1000, 2000, 4000, 8000, 30000]);
  });
});
