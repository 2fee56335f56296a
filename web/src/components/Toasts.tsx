import { createContext, useCallback, useContext, useMemo, useRef, useState, type ReactNode } from "react";
import { errorMessage } from "../api/errors";

export interface Toast {
  id: number;
  kind: "error" | "info" | "success";
  message: string;
}

interface ToastApi {
  push(kind: Toast["kind"], message: string): void;
  error(e: unknown): void;
  info(message: string): void;
}

const ToastContext = createContext<ToastApi | null>(null);

/** The app's notification area: each error is an alert, the rest are
 *  announced politely (role=status). Each toast goes away after a while or on click. */
export function ToastProvider({ children, timeoutMs = 7000 }: { children: ReactNode; timeoutMs?: number }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const next = useRef(1);
  const dismiss = useCallback((id: number) => setToasts((ts) => ts.filter((t) => t.id !== id)), []);
  const push = useCallback(
    (kind: Toast["kind"], message: string) => {
      const id = next.current++;
      setToasts((ts) => {
        // the same message twice in a row (e.g. a retry loop) shows once
        const rest = ts.filter((t) => t.message !== message);
        return [...rest.slice(-4), { id, kind, message }];
      });
      setTimeout(() => dismiss(id), kind === "error" ? timeoutMs * 1.5 : timeoutMs);
    },
    [dismiss, timeoutMs],
  );
  const api = useMemo<ToastApi>(
    () => ({ push, error: (e) => push("error", errorMessage(e)), info: (m) => push("info", m) }),
    [push],
  );
  const errors = toasts.filter((t) => t.kind === "error");
  const others = toasts.filter((t) => t.kind !== "error");
  return (
    <ToastContext.Provider value={api}>
      {children}
      <div className="toasts">
        <div aria-live="assertive" className="toast-stack">
          {errors.map((t) => (
            <ToastItem key={t.id} toast={t} onDismiss={dismiss} />
          ))}
        </div>
        <div aria-live="polite" className="toast-stack">
          {others.map((t) => (
            <ToastItem key={t.id} toast={t} onDismiss={dismiss} />
          ))}
        </div>
      </div>
    </ToastContext.Provider>
  );
}

function ToastItem({ toast, onDismiss }: { toast: Toast; onDismiss: (id: number) => void }) {
  return (
    <div className={`toast toast-${toast.kind}`} role={toast.kind === "error" ? "alert" : "status"}>
      <span>{toast.message}</span>
      <button type="button" className="icon-btn" aria-label="Dismiss notification" onClick={() => onDismiss(toast.id)}>
        ×
      </button>
    </div>
  );
}

const silent: ToastApi = { push: () => undefined, error: () => undefined, info: () => undefined };

export function useToasts(): ToastApi {
  return useContext(ToastContext) ?? silent;
}
