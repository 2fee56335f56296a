import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import { SshKeysSection } from "./SettingsPage";

const CHALLENGE = {
  challenge: "pinacle-ssh-key-challenge:v1:abc",
  namespace: "pinacle-ssh-key",
  expires_at: "2030-01-01T00:05:00Z",
  sign_command: "printf '%s' 'pinacle-ssh-key-challenge:v1:abc' | ssh-keygen -Y sign -n pinacle-ssh-key -f ~/.ssh/id_ed25519.pub",
};
const SIGNATURE = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----";

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

describe("SSH keys", () => {
  it("registers a key only with a signed challenge", async () => {
    const api = fakeApi({ SshKeys: { sshKeys: [] } });
    const posted: { path: string; body: Record<string, unknown> }[] = [];
    api.session.fetch = vi.fn(async (path: string, init: RequestInit = {}) => {
      const body = JSON.parse(String(init.body ?? "{}")) as Record<string, unknown>;
      posted.push({ path, body });
      if (path === "/api/v1/ssh-keys/challenge") return json(201, CHALLENGE);
      return json(201, { id: "k1", name: body.name, fingerprint: "SHA256:abc", algorithm: "ssh-ed25519", created_at: "2030-01-01T00:00:00Z" });
    });
    const user = userEvent.setup();
    renderWithApi(<SshKeysSection />, api);
    await screen.findByText("No SSH keys yet");
    await user.type(screen.getByLabelText("Key name"), "laptop");
    await user.type(screen.getByLabelText("Public key"), "ssh-ed25519 AAAA me@laptop");

    // no proof yet: refused before anything is sent
    await user.click(screen.getByRole("button", { name: "Add key" }));
    expect(screen.getByRole("alert")).toHaveTextContent("get a challenge");
    expect(posted).toEqual([]);

    await user.click(screen.getByRole("button", { name: "Get a challenge" }));
    expect(await screen.findByLabelText("Command that signs the challenge")).toHaveTextContent("ssh-keygen -Y sign -n pinacle-ssh-key");
    await user.type(screen.getByLabelText("Signature"), SIGNATURE);
    await user.click(screen.getByRole("button", { name: "Add key" }));

    expect(await screen.findByText("SHA256:abc")).toBeInTheDocument();
    expect(posted.map((p) => p.path)).toEqual(["/api/v1/ssh-keys/challenge", "/api/v1/ssh-keys"]);
    expect(posted[1].body).toEqual({ name: "laptop", public_key: "ssh-ed25519 AAAA me@laptop", challenge: CHALLENGE.challenge, signature: SIGNATURE });
  });

  it("shows why the server refused the proof", async () => {
    const api = fakeApi({ SshKeys: { sshKeys: [] } });
    api.session.fetch = vi.fn(async (path: string) =>
      path === "/api/v1/ssh-keys/challenge"
        ? json(201, CHALLENGE)
        : json(400, { error: { code: "proof_failed", message: "the signature was made with another key" } }),
    );
    const user = userEvent.setup();
    renderWithApi(<SshKeysSection />, api);
    await screen.findByText("No SSH keys yet");
    await user.type(screen.getByLabelText("Key name"), "laptop");
    await user.type(screen.getByLabelText("Public key"), "ssh-ed25519 AAAA me@laptop");
    await user.click(screen.getByRole("button", { name: "Get a challenge" }));
    await user.type(await screen.findByLabelText("Signature"), SIGNATURE);
    await user.click(screen.getByRole("button", { name: "Add key" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("another key");
  });
});
