import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useRef, useState } from "react";
import { useApi } from "../api/context";
import { TerminalSocket, type TerminalStatus } from "../api/terminal";
import { copyText } from "../components/CopyButton";
import { useToasts } from "../components/Toasts";
import type { TabHandle } from "./handles";
import type { WorkspaceTab } from "./tabs";

const THEME = {
  background: "#0f1117",
  foreground: "#d4d7e0",
  cursor: "#7aa2f7",
  selectionBackground: "#2f3b5c",
  black: "#1a1d26",
  red: "#f7768e",
  green: "#9ece6a",
  yellow: "#e0af68",
  blue: "#7aa2f7",
  magenta: "#bb9af7",
  cyan: "#7dcfff",
  white: "#c0caf5",
  brightBlack: "#4e5572",
  brightRed: "#ff8fa3",
  brightGreen: "#b5e48c",
  brightYellow: "#f4c97b",
  brightBlue: "#9ab8ff",
  brightMagenta: "#cdb4ff",
  brightCyan: "#a4e4ff",
  brightWhite: "#ffffff",
};

export interface TerminalViewProps {
  pod: string;
  tab: WorkspaceTab;
  active: boolean;
  register: (id: string, handle: TabHandle | null) => void;
  /** A new shell (after "Restart"): a new session id for the tab. */
  onRestart: (id: string) => void;
}

/** xterm.js bound to the pod's terminal socket. The shell lives in the pod:
 *  leaving the page detaches, closing the tab ends it. */
export default function TerminalView({ pod, tab, active, register, onRestart }: TerminalViewProps) {
  const api = useApi();
  const toasts = useToasts();
  const host = useRef<HTMLDivElement>(null);
  const termRef = useRef<Terminal | null>(null);
  const fitRef = useRef<(() => void) | null>(null);
  const sockRef = useRef<TerminalSocket | null>(null);
  const [status, setStatus] = useState<TerminalStatus>("connecting");
  const [attempt, setAttempt] = useState(0);
  const [exitCode, setExitCode] = useState<number | null>(null);

  useEffect(() => {
    const el = host.current;
    if (!el || !tab.session) return;
    const term = new Terminal({
      cursorBlink: true,
      fontFamily: '"JetBrains Mono", "Fira Code", "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 13,
      scrollback: 5000,
      theme: THEME,
      allowProposedApi: false,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    termRef.current = term;
    const safeFit = () => {
      // hidden tabs have no size: keep the last one
      if (el.offsetWidth === 0 || el.offsetHeight === 0) return;
      try {
        fit.fit();
      } catch {
        /* not rendered yet */
      }
    };
    fitRef.current = safeFit;
    safeFit();

    let everOpened = false;
    const sock = new TerminalSocket({
      pod,
      session: tab.session,
      command: tab.command,
      rows: term.rows,
      cols: term.cols,
      getToken: () => api.accessToken(),
      onData: (bytes) => term.write(bytes),
      onStatus: (s, detail) => {
        setStatus(s);
        if (s === "reconnecting") setAttempt(detail?.attempt ?? 0);
        if (s === "open") {
          // the server replays recent output on attach: start from a clean screen
          if (everOpened) term.reset();
          everOpened = true;
        }
        if (s === "exited") {
          setExitCode(detail?.code ?? null);
          term.write("\r\n\x1b[2m[process exited]\x1b[0m\r\n");
        }
      },
    });
    sockRef.current = sock;

    const encoder = new TextEncoder();
    const d1 = term.onData((data) => sock.send(encoder.encode(data)));
    const d2 = term.onBinary((data) => {
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
      sock.send(bytes);
    });
    const d3 = term.onResize(({ rows, cols }) => sock.resize(rows, cols));

    term.attachCustomKeyEventHandler((ev) => {
      const isCombo = ev.ctrlKey && ev.shiftKey && !ev.altKey && !ev.metaKey;
      if (isCombo && (ev.code === "KeyC" || ev.key.toLowerCase() === "c")) {
        if (ev.type === "keydown") {
          ev.preventDefault();
          const sel = term.getSelection();
          if (sel) void copyText(sel);
        }
        return false;
      }
      if (isCombo && (ev.code === "KeyV" || ev.key.toLowerCase() === "v")) {
        if (ev.type === "keydown" && navigator.clipboard?.readText && window.isSecureContext) {
          ev.preventDefault();
          navigator.clipboard.readText().then(
            (text) => text && term.paste(text),
            () => toasts.info("Paste was blocked by the browser; allow clipboard access or use Shift+Insert."),
          );
        }
        // without the Clipboard API the browser's own paste event reaches xterm
        return false;
      }
      return true;
    });

    const ro = new ResizeObserver(() => safeFit());
    ro.observe(el);
    sock.connect();

    register(tab.id, {
      terminate: () => sock.terminate(),
      focus: () => {
        safeFit();
        term.focus();
      },
    });

    return () => {
      register(tab.id, null);
      ro.disconnect();
      d1.dispose();
      d2.dispose();
      d3.dispose();
      sock.close();
      term.dispose();
      termRef.current = null;
      sockRef.current = null;
      fitRef.current = null;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [pod, tab.id, tab.session, tab.command]);

  useEffect(() => {
    if (!active) return;
    const t = requestAnimationFrame(() => {
      fitRef.current?.();
      termRef.current?.focus();
    });
    return () => cancelAnimationFrame(t);
  }, [active]);

  return (
    <div className="terminal-view">
      <div ref={host} className="terminal-host" role="region" aria-label={`Terminal: ${tab.title}`} />
      {status === "connecting" && (
        <div className="terminal-overlay terminal-overlay-soft" role="status">
          Connecting…
        </div>
      )}
      {status === "reconnecting" && (
        <div className="terminal-overlay" role="status">
          <span className="spinner" aria-hidden="true" /> Connection lost — reconnecting… (attempt {attempt})
        </div>
      )}
      {status === "failed" && (
        <div className="terminal-overlay" role="alert">
          <p>The terminal could not reconnect.</p>
          <button type="button" className="btn btn-primary" onClick={() => sockRef.current?.retry()}>
            Reconnect
          </button>
        </div>
      )}
      {status === "exited" && (
        <div className="terminal-overlay terminal-overlay-bottom" role="status">
          <span>[process exited{exitCode !== null ? ` with code ${exitCode}` : ""}]</span>
          <button type="button" className="btn btn-primary btn-small" onClick={() => onRestart(tab.id)}>
            Restart
          </button>
        </div>
      )}
    </div>
  );
}
