import { useEffect, useState } from "react";
import { useApi } from "../api/context";
import { tokensFromFragment } from "../api/session";
import { Link, navigate } from "../router";

/** GitHub sign-in lands here with the token pair in the fragment: store it,
 *  clear the fragment (so it is neither in history nor in a shared URL), go
 *  to the dashboard. */
export function AuthCompletePage() {
  const api = useApi();
  const [tokens] = useState(() => tokensFromFragment(window.location.hash));
  const [problem] = useState(() => {
    const frag = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const query = new URLSearchParams(window.location.search);
    return (
      frag.get("error_description") ?? frag.get("error") ?? query.get("error_description") ?? query.get("error") ?? null
    );
  });

  useEffect(() => {
    window.history.replaceState(null, "", window.location.pathname);
    if (tokens) {
      api.session.setTokens(tokens);
      navigate("/", { replace: true });
    }
  }, [api, tokens]);

  if (tokens) return null;
  return (
    <main className="login-page">
      <div className="login-card" role="alert">
        <h1>Sign-in did not complete</h1>
        <p>{problem ?? "The sign-in answer carried no session."}</p>
        <Link to="/login" className="btn btn-primary">
          Back to sign in
        </Link>
      </div>
    </main>
  );
}
