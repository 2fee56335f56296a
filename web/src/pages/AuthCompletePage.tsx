import { useEffect, useState } from "react";
import { useApi } from "../api/context";
import { takeGithubSignInStarted } from "../api/auth";
import { tokensFromFragment } from "../api/session";
import { Link, navigate } from "../router";

/** GitHub sign-in lands here with the token pair in the fragment: store it,
 *  clear the fragment (so it is neither in history nor in a shared URL), go
 *  to the dashboard. */
export function AuthCompletePage() {
  const api = useApi();
  // only a sign-in this tab started (a crafted link must not swap accounts)
  const [started] = useState(() => takeGithubSignInStarted());
  const [tokens] = useState(() => (started ? tokensFromFragment(window.location.hash) : null));
  const problem = started
    ? "The sign-in answer carried no session."
    : "This sign-in was not started from this browser tab; start it again from the sign-in page.";

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
        <p>{problem}</p>
        <Link to="/login" className="btn btn-primary">
          Back to sign in
        </Link>
      </div>
    </main>
  );
}
