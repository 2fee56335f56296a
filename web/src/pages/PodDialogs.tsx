import { useId, useState, type FormEvent } from "react";
import { errorMessage } from "../api/errors";
import { CopyButton } from "../components/CopyButton";
import { Dialog } from "../components/Dialog";

export function SshDialog({ command, onClose }: { command: string; onClose: () => void }) {
  return (
    <Dialog title="SSH into this pod" onClose={onClose}>
      <p>Run this in a terminal on your machine (your SSH keys are under Settings → SSH keys):</p>
      <div className="copybox">
        <code aria-label="SSH command">{command}</code>
        <CopyButton text={command} label="Copy SSH command" />
      </div>
      <div className="dialog-actions">
        <button type="button" className="btn" onClick={onClose}>
          Close
        </button>
      </div>
    </Dialog>
  );
}

export function SnapshotDialog({ onSubmit, onClose }: { onSubmit: (name: string | null) => Promise<void>; onClose: () => void }) {
  const id = useId();
  const [name, setName] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onSubmit(name.trim() || null);
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };
  return (
    <Dialog title="Create snapshot" onClose={onClose}>
      <form onSubmit={submit}>
        <p className="muted">A snapshot archives /workspace and the home directory.</p>
        <div className="field">
          <label htmlFor={`${id}-name`}>Snapshot name (optional)</label>
          <input id={`${id}-name`} value={name} onChange={(e) => setName(e.target.value)} maxLength={100} />
        </div>
        {error && (
          <div role="alert" className="form-error">
            {error}
          </div>
        )}
        <div className="dialog-actions">
          <button type="button" className="btn btn-ghost" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary" disabled={busy}>
            {busy ? "Creating…" : "Create snapshot"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function DeleteDialog({
  podName,
  onConfirm,
  onClose,
}: {
  podName: string;
  onConfirm: () => Promise<void>;
  onClose: () => void;
}) {
  const id = useId();
  const [typed, setTyped] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const matches = typed === podName;
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!matches) return;
    setBusy(true);
    setError(null);
    try {
      await onConfirm();
    } catch (err) {
      setError(errorMessage(err));
      setBusy(false);
    }
  };
  return (
    <Dialog title="Delete pod" onClose={onClose}>
      <form onSubmit={submit}>
        <p>
          This deletes <strong>{podName}</strong> with its disk: /workspace, the home directory and everything installed.
          It cannot be undone.
        </p>
        <div className="field">
          <label htmlFor={`${id}-confirm`}>Type the pod name to confirm</label>
          <input
            id={`${id}-confirm`}
            value={typed}
            autoComplete="off"
            spellCheck={false}
            onChange={(e) => setTyped(e.target.value)}
          />
        </div>
        {error && (
          <div role="alert" className="form-error">
            {error}
          </div>
        )}
        <div className="dialog-actions">
          <button type="button" className="btn btn-ghost" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="btn btn-danger" disabled={!matches || busy}>
            {busy ? "Deleting…" : "Delete pod"}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
