import { useCallback, useEffect, useRef, useState } from "react";
import { useApi } from "../api/context";
import { errorMessage } from "../api/errors";
import { OPEN_PORT } from "../api/queries";
import type { OpenLink } from "../api/types";
import { useToasts } from "../components/Toasts";
import { safeHttpUrl } from "../lib/format";
import type { WorkspaceTab } from "./tabs";

interface Props {
  pod: string;
  tab: WorkspaceTab;
}

/** A port of the pod, through the proxy, framed. Each load asks for a fresh
 *  one-minute sign-in link (`openPort(embed: true)`). */
export function PreviewView({ pod, tab }: Props) {
  const api = useApi();
  const toasts = useToasts();
  const [link, setLink] = useState<OpenLink | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const [nonce, setNonce] = useState(0);
  const seq = useRef(0);
  const port = tab.port ?? 0;
  const path = tab.path ?? "/";

  const load = useCallback(async () => {
    const mine = ++seq.current;
    setLoading(true);
    setError(null);
    try {
      const d = await api.gql<{ openPort: OpenLink }>(OPEN_PORT, { pod, port, path, embed: true });
      if (mine !== seq.current) return;
      if (!safeHttpUrl(d.openPort.url)) throw new Error("The server answered an unusable preview URL.");
      setLink(d.openPort);
      setNonce((n) => n + 1);
    } catch (e) {
      if (mine === seq.current) setError(errorMessage(e));
    } finally {
      if (mine === seq.current) setLoading(false);
    }
  }, [api, pod, port, path]);

  useEffect(() => {
    void load();
  }, [load]);

  const openExternal = async () => {
    // open the window now (inside the click) so no popup blocker steps in,
    // then send it to the sign-in link once we have it
    const win = window.open("about:blank", "_blank");
    try {
      const d = await api.gql<{ openPort: OpenLink }>(OPEN_PORT, { pod, port, path, embed: false });
      const url = safeHttpUrl(d.openPort.url);
      if (!url) throw new Error("The server answered an unusable URL.");
      if (win) {
        win.opener = null;
        win.location.href = url;
      } else {
        window.open(url, "_blank", "noopener");
      }
    } catch (e) {
      win?.close();
      toasts.error(e);
    }
  };

  const shown = link ? `${link.origin.replace(/\/$/, "")}${path}` : `port ${port}${path}`;
  return (
    <div className="frame-view">
      <div className="frame-toolbar" role="toolbar" aria-label={`${tab.title} toolbar`}>
        <button type="button" className="icon-btn" aria-label="Reload preview" title="Reload" onClick={() => void load()} disabled={loading}>
          ⟳
        </button>
        <span className="frame-url" title={shown}>
          {shown}
        </span>
        <button type="button" className="btn btn-small" onClick={openExternal}>
          Open in new window
        </button>
      </div>
      <div className="frame-body">
        {error ? (
          <div className="state state-error" role="alert">
            <strong>Could not open port {port}</strong>
            <p>{error}</p>
            <button type="button" className="btn" onClick={() => void load()}>
              Try again
            </button>
          </div>
        ) : link ? (
          <iframe
            key={nonce}
            title={`Preview: ${tab.title}`}
            src={link.url}
            className="frame"
            // the pod's page never reads the clipboard (the IDE's grant would
            // carry over) nor navigates the IDE away
            allow="clipboard-write; fullscreen"
            sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads"
          />
        ) : (
          <div className="state state-loading" role="status">
            <span className="spinner" aria-hidden="true" /> Opening port {port}…
          </div>
        )}
      </div>
    </div>
  );
}

/** An outside URL, framed when the site allows it. */
export function UrlView({ tab }: { tab: WorkspaceTab }) {
  const url = safeHttpUrl(tab.url);
  const [nonce, setNonce] = useState(0);
  if (!url) {
    return (
      <div className="state state-error" role="alert">
        This tab's URL is not an http(s) address.
      </div>
    );
  }
  return (
    <div className="frame-view">
      <div className="frame-toolbar" role="toolbar" aria-label={`${tab.title} toolbar`}>
        <button type="button" className="icon-btn" aria-label="Reload page" title="Reload" onClick={() => setNonce((n) => n + 1)}>
          ⟳
        </button>
        <span className="frame-url" title={url}>
          {url}
        </span>
        <a className="btn btn-small" href={url} target="_blank" rel="noopener noreferrer">
          Open in new window
        </a>
      </div>
      <p className="frame-note">Many sites refuse to be shown inside another page; if this stays blank, open it in a new window.</p>
      <div className="frame-body">
        <iframe
          key={nonce}
          title={`Page: ${tab.title}`}
          src={url}
          className="frame"
          referrerPolicy="no-referrer"
          sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox"
        />
      </div>
    </div>
  );
}
