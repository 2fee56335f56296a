import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { Envelope } from "../api/router";
import { fakeApi, renderWithApi } from "../test/fakeApi";
import { RouterPage } from "./RouterPage";

const task = (over: Partial<Envelope>): Envelope => ({
  id: "task_1",
  status: "succeeded",
  intent: "chat",
  output: { text: "hi", finish_reason: "stop" },
  engine: {
    route: { model: "gpt-mini", provider: "openai" },
    chosen_by: "default_route",
    reason: "default route gpt-mini of intent chat (p95 310 ms within its 2000 ms SLO)",
    privacy: "hybrid",
    attempts: [{ model: "gpt-mini", provider: "openai", outcome: "ok", latency_ms: 300, streamed: true }],
    registry: "abcdef012345",
  },
  usage: { latency_ms: 320, ttft_ms: 120, tokens: { input: 10, output: 20, estimated: false }, cost_usd: 0.000034, reserved_usd: 0.0006 },
  error: null,
  created_at: Date.now() - 60_000,
  ...over,
});

describe("RouterPage", () => {
  it("shows budgets as meters, tasks with route, reason and cost, attempts on demand, and model health", async () => {
    const failed = task({
      id: "task_2",
      status: "failed",
      engine: {
        ...task({}).engine,
        route: { model: "smollm2", provider: "local" },
        chosen_by: "policy",
        reason: "smollm2 on local by the policy's order; gpt-mini skipped: circuit open for openai",
        attempts: [{ model: "smollm2", provider: "local", outcome: "cut", error: "local's stream ended before it was complete", latency_ms: 80, streamed: true }],
      },
      usage: { latency_ms: 90, tokens: { input: 9, output: 4, estimated: true }, cost_usd: 0, reserved_usd: 0 },
      error: { code: "cut", message: "the stream failed after it started" },
    });
    const api = fakeApi({}, undefined, undefined, {
      tasks: vi.fn(async () => [
        { subject: "user:u", task: task({}) },
        { subject: "user:u", task: failed },
      ]),
      usage: vi.fn(async () => ({ budgets: [{ kind: "user" as const, scope: "user:u@2026-12", cap_usd: 5, spent_usd: 4, reserved_usd: 0.6 }], task: null })),
      models: vi.fn(async () => [
        {
          id: "gpt-mini",
          owned_by: "openai",
          aion: { kind: "chat" as const, tier: "small", price_per_mtok_usd: { input: 0.15, output: 0.6 }, cloud: true, health: { availability: "open", consecutive_failures: 5, p95_ms: 310, samples: 40 } },
        },
      ]),
    });
    renderWithApi(<RouterPage />, api);
    const meter = await screen.findByRole("meter", { name: "user budget" });
    expect(meter.getAttribute("aria-valuenow")).toBe("92");
    expect(meter.getAttribute("aria-valuetext")).toBe("$4.00 of $5.00 ($0.60 reserved)");
    expect(meter.className).toContain("meter-high");
    const rows = screen.getAllByRole("row");
    const first = rows.find((r) => within(r).queryByText("gpt-mini on openai"))!;
    expect(within(first).getByText(/default route gpt-mini of intent chat/)).toBeTruthy();
    expect(within(first).getByText("$0.000034")).toBeTruthy();
    const second = rows.find((r) => within(r).queryByText("smollm2 on local"))!;
    expect(within(second).getByText("failed")).toBeTruthy();
    expect(within(second).getByText(/circuit open for openai — the stream failed after it started/)).toBeTruthy();
    expect(within(second).getByTitle("estimated: the provider reported no usage")).toBeTruthy();
    fireEvent.click(within(second).getByRole("button", { name: "Attempts" }));
    expect(screen.getByText(/smollm2 on local: cut — local's stream ended before it was complete/)).toBeTruthy();
    expect(screen.getByRole("img", { name: /gpt-mini \$0\.000034/ })).toBeTruthy();
    expect(screen.getByText("open, p95 310 ms")).toBeTruthy();
  });

  it("shows admins the modules, where each came from and the quarantined packages; others see none", async () => {
    const api = fakeApi({}, undefined, undefined, {
      modules: vi.fn(async () => ({
        modules: [
          { name: "digits", version: "1.0.0", runtime: "wasm" as const, package: null, image: null },
          { name: "guard", version: "0.1.0", runtime: "subprocess" as const, package: "guard", image: "busybox" },
        ],
        packages: [
          { name: "guard", state: "installed" as const, reference: "reg/modules/guard:1.0", digest: "sha256:aa", signed_by: "503168f5695e4cb2", reason: null, at: "2026-12-07T00:00:00Z" },
          { name: "1cff9cb0b8fc", state: "quarantined" as const, reference: "reg/modules/forged:1.0", digest: "sha256:1c", signed_by: null, reason: "no trusted key made this signature", at: "2026-12-07T00:00:00Z" },
        ],
        trusted_keys: ["503168f5695e4cb2"],
      })),
    });
    renderWithApi(<RouterPage />, api);
    const table = await screen.findByRole("table", { name: "Modules" });
    const guard = within(table).getByText("guard 0.1.0").closest("tr")!;
    expect(within(guard).getByText("subprocess in gVisor (busybox)")).toBeTruthy();
    expect(within(guard).getByText("reg/modules/guard:1.0")).toBeTruthy();
    expect(within(guard).getByText("503168f5695e4cb2")).toBeTruthy();
    expect(within(within(table).getByText("digits 1.0.0").closest("tr")!).getByText("modules.yml")).toBeTruthy();
    const q = screen.getByRole("table", { name: "Quarantined packages" });
    expect(within(q).getByText("no trusted key made this signature")).toBeTruthy();

    const user = fakeApi({}, undefined, undefined, {});
    renderWithApi(<RouterPage />, user);
    await waitFor(() => expect(user.router.modules).toHaveBeenCalled());
    expect(screen.getAllByRole("heading", { name: "Modules" })).toHaveLength(1);
  });

  it("says so when the router cannot be read, and when nothing is configured", async () => {
    const api = fakeApi({}, undefined, undefined, {
      tasks: vi.fn(async () => {
        throw new Error("network down");
      }),
    });
    renderWithApi(<RouterPage />, api);
    await waitFor(() => expect(screen.getByRole("alert").textContent).toContain("The router could not be read"));
    const empty = fakeApi({});
    renderWithApi(<RouterPage />, empty);
    expect(await screen.findByText("No models: the operator has not configured the router")).toBeTruthy();
    expect(screen.getByText("No tasks yet")).toBeTruthy();
  });
});
