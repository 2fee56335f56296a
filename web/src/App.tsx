import { useEffect, useSyncExternalStore } from "react";
import type { Api } from "./api/client";
import { ApiContext, useApi } from "./api/context";
import { ME } from "./api/queries";
import type { User } from "./api/types";
import { ToastProvider, useToasts } from "./components/Toasts";
import { useAsync } from "./lib/useAsync";
import { AdminPage } from "./pages/AdminPage";
import { AuthCompletePage } from "./pages/AuthCompletePage";
import { DashboardPage } from "./pages/DashboardPage";
import { LoginPage } from "./pages/LoginPage";
import { MemoryPage } from "./pages/MemoryPage";
import { RouterPage } from "./pages/RouterPage";
import { SettingsPage } from "./pages/SettingsPage";
import { WorkspacePage } from "./pages/WorkspacePage";
import { Link, matchRoute, navigate, useLocation } from "./router";

export function App({ api }: { api: Api }) {
  return (
    <ApiContext.Provider value={api}>
      <ToastProvider>
        <Shell />
      </ToastProvider>
    </ApiContext.Provider>
  );
}

function useSignedIn(): boolean {
  const api = useApi();
  return useSyncExternalStore(
    (cb) => api.session.subscribe(cb),
    () => api.session.signedIn,
  );
}

/** Where to go after signing in: a same-origin path only. */
export function safeNext(search: string): string {
  const next = new URLSearchParams(search).get("next");
  if (!next || !next.startsWith("/")) return "/";
  let u: URL;
  try {
    u = new URL(next, window.location.origin);
  } catch {
    return "/";
  }
  // `/\evil.com`, `/%09/evil.com`… resolve elsewhere: same origin only
  if (u.origin !== window.location.origin || u.pathname.startsWith("/login") || u.pathname.startsWith("/auth/")) return "/";
  return u.pathname + u.search + u.hash;
}

function Shell() {
  const loc = useLocation();
  const signedIn = useSignedIn();
  const path = loc.pathname;

  useEffect(() => {
    if (path === "/auth/complete") return;
    if (!signedIn && path !== "/login") {
      const next = path === "/" ? "" : `?next=${encodeURIComponent(path + loc.search)}`;
      navigate(`/login${next}`, { replace: true });
    } else if (signedIn && path === "/login") {
      navigate(safeNext(loc.search), { replace: true });
    }
  }, [signedIn, path, loc.search]);

  if (path === "/auth/complete") return <AuthCompletePage />;
  if (!signedIn) return <LoginPage onSignedIn={() => navigate(safeNext(loc.search), { replace: true })} />;
  if (path === "/login") return null;

  let page;
  let podKey: string | undefined;
  if (path === "/" || path === "") page = <DashboardPage />;
  else if (matchRoute("/settings", path)) page = <SettingsPage />;
  else if (matchRoute("/memory", path)) page = <MemoryPage />;
  else if (matchRoute("/router", path)) page = <RouterPage />;
  else if (matchRoute("/admin", path)) page = <AdminPage />;
  else if ((podKey = matchRoute("/pods/*", path)?.["*"])) page = <WorkspacePage key={podKey} podKey={podKey} />;
  else page = <NotFound />;

  const workspace = podKey !== undefined;
  return (
    <div className={workspace ? "app app-workspace" : "app"}>
      <TopBar path={path} />
      <main id="main" className={workspace ? "main main-workspace" : "main"}>
        {page}
      </main>
    </div>
  );
}

function TopBar({ path }: { path: string }) {
  const api = useApi();
  const toasts = useToasts();
  const me = useAsync((signal) => api.gql<{ me: User }>(ME, {}, { signal }), [api]);
  useEffect(() => {
    if (me.error) toasts.error(me.error);
  }, [me.error, toasts]);
  const signOut = async () => {
    await api.auth.logout();
    navigate("/login", { replace: true });
  };
  const current = (p: string) => (p === "/" ? path === "/" : path.startsWith(p)) ? ("page" as const) : undefined;
  return (
    <header className="topbar">
      <Link to="/" className="brand" aria-label="Pinacle home">
        <span className="brand-mark" aria-hidden="true">
          ▲
        </span>
        <span className="brand-name">Pinacle</span>
      </Link>
      <nav aria-label="Main" className="topnav">
        <Link to="/" aria-current={current("/")}>
          Dashboard
        </Link>
        <Link to="/memory" aria-current={current("/memory")}>
          Memory
        </Link>
        <Link to="/router" aria-current={current("/router")}>
          Router
        </Link>
        <Link to="/settings" aria-current={current("/settings")}>
          Settings
        </Link>
        {me.data?.me.isAdmin && (
          <Link to="/admin" aria-current={current("/admin")}>
            Admin
          </Link>
        )}
      </nav>
      <div className="topbar-user">
        {me.data && (
          <span className="user-name" title={me.data.me.isAdmin ? "Instance administrator" : undefined}>
            {me.data.me.name}
            {me.data.me.isAdmin && <span className="tag">admin</span>}
          </span>
        )}
        <button type="button" className="btn btn-ghost" onClick={signOut}>
          Sign out
        </button>
      </div>
    </header>
  );
}

function NotFound() {
  return (
    <section className="page">
      <h1>Page not found</h1>
      <p>
        Nothing lives here. <Link to="/">Back to your pods</Link>
      </p>
    </section>
  );
}
