import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import { SecretsSection, TokensSection, secretNameError } from "./SettingsPage";

describe("secrets", () => {
  it("saves a secret and never renders its value", async () => {
    const value = "sk-live-9f8e7d6c5b4a";
    const api = fakeApi({
      Secrets: { secrets: [{ name: "GITHUB_TOKEN", scope: "user", updatedAt: "2025-01-01T00:00:00Z" }] },
      SetSecret: ({ name }: Record<string, unknown>) => ({ setSecret: { name, scope: "user", updatedAt: new Date().toISOString() } }),
    });
    const user = userEvent.setup();
    const { container } = renderWithApi(<SecretsSection />, api);
    expect(await screen.findByText("GITHUB_TOKEN")).toBeInTheDocument();

    const valueInput = screen.getByLabelText("Value");
    expect(valueInput).toHaveAttribute("type", "password");
    await user.type(screen.getByLabelText("Secret name"), "OPENAI_API_KEY");
    await user.type(valueInput, value);
    await user.click(screen.getByRole("button", { name: "Save secret" }));

    expect(await screen.findByRole("status")).toHaveTextContent("Saved OPENAI_API_KEY.");
    expect(api.calls.find((c) => c.op === "SetSecret")!.vars).toEqual({ name: "OPENAI_API_KEY", value });
    const table = screen.getByRole("table");
    expect(within(table).getByText("OPENAI_API_KEY")).toBeInTheDocument();
    expect(valueInput).toHaveValue("");
    expect(screen.getByLabelText("Secret name")).toHaveValue("");
    expect(container.innerHTML).not.toContain(value);
    expect(document.body.innerHTML).not.toContain(value);
  });

  it("refuses names that cannot be environment variables", async () => {
    const api = fakeApi({ Secrets: { secrets: [] } });
    const user = userEvent.setup();
    renderWithApi(<SecretsSection />, api);
    await screen.findByText("No secrets yet");
    await user.type(screen.getByLabelText("Secret name"), "my-key");
    await user.type(screen.getByLabelText("Value"), "v");
    await user.click(screen.getByRole("button", { name: "Save secret" }));
    expect(screen.getByRole("alert")).toHaveTextContent("A-Z, 0-9 and _");
    expect(api.calls.some((c) => c.op === "SetSecret")).toBe(false);
    expect(secretNameError("PINACLE_X")).toMatch(/set by Pinacle/);
    expect(secretNameError("_OK_1")).toBeNull();
  });
});

describe("API tokens", () => {
  it("shows a created token once, then never again", async () => {
    const api = fakeApi({
      Tokens: { tokens: [] },
      CreateToken: ({ name, scope, expiresInDays }: Record<string, unknown>) => ({
        createToken: {
          token: "pin_secret_abc123",
          info: { id: "t1", name, scope, createdAt: new Date().toISOString(), lastUsedAt: null, expiresAt: expiresInDays ? "2026-01-01T00:00:00Z" : null },
        },
      }),
    });
    const user = userEvent.setup();
    renderWithApi(<TokensSection />, api);
    await screen.findByText("No API tokens");
    await user.type(screen.getByLabelText("Token name"), "ci");
    await user.selectOptions(screen.getByLabelText("Scope"), "READ");
    await user.click(screen.getByRole("button", { name: "Create token" }));
    const box = await screen.findByRole("region", { name: "New token" });
    expect(within(box).getByLabelText("New API token")).toHaveTextContent("pin_secret_abc123");
    expect(box).toHaveTextContent(/shown only once/);
    expect(api.calls.find((c) => c.op === "CreateToken")!.vars).toEqual({ name: "ci", scope: "READ", expiresInDays: 90 });
    await user.click(within(box).getByRole("button", { name: "I have copied it" }));
    await waitFor(() => expect(document.body.innerHTML).not.toContain("pin_secret_abc123"));
    expect(screen.getByRole("button", { name: "Revoke token ci" })).toBeInTheDocument();
  });
});
