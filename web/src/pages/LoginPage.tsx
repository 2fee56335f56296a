import { useEffect, useState, type FormEvent } from "react";
import { GITHUB_START, markGithubSignInStarted, type Providers } from "../api/auth";
import { useApi } from "../api/context";
import { ApiError, errorMessage } from "../api/errors";

type Mode = "signin" | "signup";

function loginError(e: unknown, mode: Mode): string {
  if (e instanceof ApiError) {
    if (mode === "signin" && (e.status === 401 || e.code === "unauthorized" || e.code === "invalid_credentials"))
      return "Wrong user name or password.";
    if (e.status === 429) return "Too many attempts; wait a minute and try again.";
  }
  return errorMessage(e);
}

export function LoginPage({ onSignedIn }: { onSignedIn?: () => void }) {
  const api = useApi();
  const [providers, setProviders] = useState<Providers | null>(null);
  const [mode, setMode] = useState<Mode>("signin");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let live = true;
    api.auth.providers().then(
      (p) => live && setProviders(p),
      () => live && setProviders({ github: false, signup: false }),
    );
    return () => {
      live = false;
    };
  }, [api]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    if (!name.trim() || !password) {
      setError("Enter your user name and password.");
      return;
    }
    setBusy(true);
    try {
      if (mode === "signin") await api.auth.login(name.trim(), password);
      else await api.auth.signup(name.trim(), password);
      onSignedIn?.();
    } catch (err) {
      setError(loginError(err, mode));
      setBusy(false);
    }
  };

  const switchMode = (m: Mode) => {
    setMode(m);
    setError(null);
  };

  const title = mode === "signin" ? "Sign in to Pinacle" : "Create your Pinacle account";
  return (
    <main className="login-page">
      <div className="login-card">
        <div className="login-brand" aria-hidden="true">
          ▲ Pinacle
        </div>
        <h1>{title}</h1>
        <form onSubmit={submit} noValidate>
          <label className="field">
            <span>User name</span>
            <input
              name="username"
              autoComplete="username"
              value={name}
              onChange={(e) => setName(e.target.value)}
              autoFocus
              required
            />
          </label>
          <label className="field">
            <span>Password</span>
            <input
              name="password"
              type="password"
              autoComplete={mode === "signin" ? "current-password" : "new-password"}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              required
            />
          </label>
          {error && (
            <div role="alert" className="form-error">
              {error}
            </div>
          )}
          <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
            {busy ? (mode === "signin" ? "Signing in…" : "Creating account…") : mode === "signin" ? "Sign in" : "Create account"}
          </button>
        </form>
        {providers?.github && (
          <>
            <div className="divider">
              <span>or</span>
            </div>
            <a className="btn btn-block btn-github" href={GITHUB_START} onClick={() => markGithubSignInStarted()}>
              Sign in with GitHub
            </a>
          </>
        )}
        <p className="login-switch">
          {mode === "signin" ? (
            providers?.signup ? (
              <>
                New here?{" "}
                <button type="button" className="link-btn" onClick={() => switchMode("signup")}>
                  Create account
                </button>
              </>
            ) : null
          ) : (
            <>
              Have an account?{" "}
              <button type="button" className="link-btn" onClick={() => switchMode("signin")}>
                Back to sign in
              </button>
            </>
          )}
        </p>
      </div>
    </main>
  );
}
