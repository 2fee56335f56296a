import { describe, expect, it } from "vitest";
import { resolveUserPath } from "../api/files";
import { diagnosticsFromDetails, formatDiagnostic, hasErrors, problemLines } from "./diagnostics";
import { formatBytes, safeHttpUrl } from "./format";
import { podNameError, podPath } from "./podName";
import { formatRelative } from "./time";

describe("formatRelative", () => {
  const now = Date.parse("2025-01-10T12:00:00Z");
  it("reads like a person would say it", () => {
    expect(formatRelative("2025-01-10T11:59:50Z", now)).toBe("just now");
    expect(formatRelative("2025-01-10T11:57:00Z", now)).toBe("3 min ago");
    expect(formatRelative("2025-01-10T09:00:00Z", now)).toBe("3 h ago");
    expect(formatRelative("2025-01-09T12:00:00Z", now)).toBe("1 day ago");
    expect(formatRelative("2024-11-10T12:00:00Z", now)).toBe("2 months ago");
    expect(formatRelative(null, now)).toBe("—");
    expect(formatRelative("garbage", now)).toBe("—");
  });
});

describe("pod names", () => {
  it("follow the server's rules", () => {
    expect(podNameError("my-app-2")).toBeNull();
    expect(podNameError("")).toMatch(/required/);
    expect(podNameError("MyApp")).toMatch(/lowercase/);
    expect(podNameError("my_app")).toMatch(/not allowed/);
    expect(podNameError("-app")).toMatch(/start and end/);
    expect(podNameError("a".repeat(41))).toMatch(/at most 40/);
    expect(podNameError("123e4567-e89b-12d3-a456-426614174000")).toMatch(/pod id/);
  });
  it("team pods are addressed as team/name", () => {
    expect(podPath({ name: "api", team: null })).toBe("/pods/api");
    expect(podPath({ name: "api", team: "core" })).toBe("/pods/core/api");
  });
});

describe("misc", () => {
  it("only frames http(s) URLs", () => {
    expect(safeHttpUrl("https://example.com")).toBe("https://example.com/");
    expect(safeHttpUrl("javascript:alert(1)")).toBeNull();
    expect(safeHttpUrl("data:text/html,hi")).toBeNull();
    expect(safeHttpUrl("not a url")).toBeNull();
  });
  it("formats bytes", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(4 * 1024 ** 3)).toBe("4 GiB");
    expect(formatBytes(null)).toBe("—");
  });
  it("resolves user paths against /workspace", () => {
    expect(resolveUserPath("src/a.py")).toBe("/workspace/src/a.py");
    expect(resolveUserPath("/etc/hosts")).toBe("/etc/hosts");
    expect(resolveUserPath("./a/../b.txt")).toBe("/workspace/b.txt");
    expect(resolveUserPath("dir/")).toBeNull();
    expect(resolveUserPath("  ")).toBeNull();
  });
  it("formats and locates diagnostics", () => {
    const ds = diagnosticsFromDetails([
      { severity: "error", file: "pinacle.yaml", line: 3, column: 5, path: "imgae", message: "unknown field `imgae`", suggestion: "did you mean `image`?" },
      { severity: "warning", file: "pinacle.yaml", line: 3, column: 1, path: "x", message: "w", suggestion: null },
      { severity: "warning", file: "pinacle.yaml", line: 7, column: 1, path: "y", message: "w2" },
      "junk",
    ]);
    expect(ds).toHaveLength(3);
    expect(formatDiagnostic(ds[0]!)).toBe("3:5 unknown field `imgae` (did you mean `image`?)");
    expect(hasErrors(ds)).toBe(true);
    expect(hasErrors(ds.slice(1))).toBe(false);
    expect([...problemLines(ds)]).toEqual([
      [3, "error"],
      [7, "warning"],
    ]);
  });
});

describe("where to go after signing in", () => {
  it("is a path on this origin, never another site", async () => {
    const { safeNext } = await import("../App");
    expect(safeNext("?next=%2Fpods%2Fdemo%3Ftab%3D1")).toBe("/pods/demo?tab=1");
    expect(safeNext("?next=%2F%5Cevil.com")).toBe("/");
    expect(safeNext("?next=%2F%09%2Fevil.com")).toBe("/");
    expect(safeNext("?next=%2F%2Fevil.com")).toBe("/");
    expect(safeNext("?next=https%3A%2F%2Fevil.com")).toBe("/");
    expect(safeNext("?next=%2Flogin")).toBe("/");
    expect(safeNext("")).toBe("/");
  });
});
