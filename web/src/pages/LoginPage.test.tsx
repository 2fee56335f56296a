import { markGithubSignInStarted } from "../api/auth";
import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { App } from "../App";
import { createAuthApi } from "../api/auth";
import { SESSION_KEY, SessionManager } from "../api/session";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import { LoginPage } from "./LoginPage";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

type Route = (url: string, init?: RequestInit) => Response | undefined;

function mockFetch(route: Route) {
  const fn = vi.fn(async (url: string, init?: RequestInit) => route(url, init) ?? json(404, { error: { code: "not_found", message: url } }));
  vi.stubGlobal("fetch", fn);
  return fn;
}

/** The real auth client (fetch mocked) inside a fake Api. */
function realAuthApi() {
  const api = fakeApi({});
  const session = new SessionManager({ storage: localStorage, window: null, locks: null });
  return { ...api, session, auth: createAuthApi(session) };
}

beforeEach(() => window.history.replaceState(null, "", "/login"));
afterEach(() => vi.unstubAllGlobals());

describe("login page", () => {
  it("shows the server's refusal in an alert and stays signed out", async () => {
    mockFetch((url) => {
      if (url === "/api/v1/auth/providers") return json(200, { github: false, signup: false });
      if (url === "/api/v1/auth/login") return json(401, { error: { code: "unauthorized", message: "wrong name or password" } });
    });
    const api = realAuthApi();
    const user = userEvent.setup();
    renderWithApi(<LoginPage />, api);
    await user.type(screen.getByLabelText("User name"), "ann");
    await user.type(screen.getByLabelText("Password"), "nope");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Wrong user name or password.");
    expect(api.session.signedIn).toBe(false);
    expect(screen.queryByRole("link", { name: "Sign in with GitHub" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Create account" })).toBeNull();
  });

  it("asks for both fields before calling the server", async () => {
    const fetchMock = mockFetch((url) => (url === "/api/v1/auth/providers" ? json(200, { github: false, signup: false }) : undefined));
    const user = userEvent.setup();
    renderWithApi(<LoginPage />, realAuthApi());
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    expect(screen.getByRole("alert")).toHaveTextContent("Enter your user name and password.");
    expect(fetchMock.mock.calls.map((c) => c[0])).toEqual(["/api/v1/auth/providers"]);
  });

  it("signs in and stores the token pair", async () => {
    mockFetch((url, init) => {
      if (url === "/api/v1/auth/providers") return json(200, { github: true, signup: true });
      if (url === "/api/v1/auth/login") {
        expect(JSON.parse(init!.body as string)).toEqual({ name: "ann", password: "pw" });
        return json(200, { access_token: "A", token_type: "Bearer", expires_in: 900, refresh_token: "R", refresh_expires_in: 86400 });
      }
    });
    const api = realAuthApi();
    const onSignedIn = vi.fn();
    const user = userEvent.setup();
    renderWithApi(<LoginPage onSignedIn={onSignedIn} />, api);
    expect(await screen.findByRole("link", { name: "Sign in with GitHub" })).toHaveAttribute("href", "/api/v1/auth/github/start");
    await user.type(screen.getByLabelText("User name"), "ann");
    await user.type(screen.getByLabelText("Password"), "pw");
    await user.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(JSON.parse(localStorage.getItem(SESSION_KEY)!)).toMatchObject({ accessToken: "A", refreshToken: "R" });
  });

  it("creates an account, then signs in; signup errors are shown", async () => {
    let taken = true;
    mockFetch((url) => {
      if (url === "/api/v1/auth/providers") return json(200, { github: false, signup: true });
      if (url === "/api/v1/auth/signup")
        return taken
          ? json(409, { error: { code: "conflict", message: "the name ann is taken" } })
          : json(201, { id: "u1", name: "ann" });
      if (url === "/api/v1/auth/login") return json(200, { access_token: "A", expires_in: 900, refresh_token: "R" });
    });
    const api = realAuthApi();
    const user = userEvent.setup();
    renderWithApi(<LoginPage />, api);
    await user.click(await screen.findByRole("button", { name: "Create account" }));
    await user.type(screen.getByLabelText("User name"), "ann");
    await user.type(screen.getByLabelText("Password"), "long password");
    await user.click(screen.getByRole("button", { name: "Create account" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("the name ann is taken");
    taken = false;
    await user.click(screen.getByRole("button", { name: "Create account" }));
    await waitFor(() => expect(api.session.signedIn).toBe(true));
  });
});

describe("GitHub sign-in landing", () => {
  it("refuses a pair this tab did not ask for (a crafted link)", async () => {
    window.history.replaceState(null, "", "/auth/complete#access_token=EVIL&refresh_token=EVIL&expires_in=900");
    const api = fakeApi({});
    renderWithApi(<App api={api} />, api);
    expect(await screen.findByText(/not started from this browser tab/)).toBeInTheDocument();
    expect(api.session.current).toBeNull();
    expect(window.location.hash).toBe("");
  });

  it("stores the pair from the fragment, clears it and goes to the dashboard", async () => {
    markGithubSignInStarted();
    window.history.replaceState(null, "", "/auth/complete#access_token=GA&refresh_token=GR&expires_in=900");
    const api = fakeApi({ Me: { me: { id: "u", name: "ann", isAdmin: false } }, Pods: { pods: [] } });
    renderWithApi(<App api={api} />, api);
    expect(await screen.findByRole("heading", { name: "Pods" })).toBeInTheDocument();
    expect(window.location.pathname).toBe("/");
    expect(window.location.hash).toBe("");
    expect(api.session.current).toMatchObject({ accessToken: "GA", refreshToken: "GR" });
    expect(await screen.findByText("No pods yet")).toBeInTheDocument();
  });

  it("sends a signed-out visitor to /login, remembering where they were going", async () => {
    window.history.replaceState(null, "", "/settings");
    const api = fakeApi({});
    renderWithApi(<App api={api} />, api);
    expect(await screen.findByRole("heading", { name: "Sign in to Pinacle" })).toBeInTheDocument();
    expect(window.location.pathname + window.location.search).toBe("/login?next=%2Fsettings");
  });
});
