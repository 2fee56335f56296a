import type { Diagnostic } from "../api/types";

export function isError(d: Diagnostic): boolean {
  return d.severity.toLowerCase() === "error";
}

export function hasErrors(ds: Diagnostic[]): boolean {
  return ds.some(isError);
}

/** "3:5 unknown field `imgae` (did you mean `image`?)" */
export function formatDiagnostic(d: Diagnostic): string {
  const where = d.line > 0 ? `${d.line}:${d.column}` : d.path || d.file;
  const suggestion = d.suggestion ? ` (${d.suggestion})` : "";
  return `${where} ${d.message}${suggestion}`;
}

/** Line number → the worst severity on it ("error" beats "warning"). */
export function problemLines(ds: Diagnostic[]): Map<number, "error" | "warning"> {
  const m = new Map<number, "error" | "warning">();
  for (const d of ds) {
    if (!(d.line > 0)) continue;
    const sev = isError(d) ? "error" : "warning";
    if (m.get(d.line) !== "error") m.set(d.line, sev);
  }
  return m;
}

/** `extensions.details` of an invalid_config error, read defensively. */
export function diagnosticsFromDetails(details: unknown): Diagnostic[] {
  if (!Array.isArray(details)) return [];
  return details
    .filter((d): d is Record<string, unknown> => !!d && typeof d === "object")
    .map((d) => ({
      severity: typeof d.severity === "string" ? d.severity : "error",
      file: typeof d.file === "string" ? d.file : "pinacle.yaml",
      line: typeof d.line === "number" ? d.line : 0,
      column: typeof d.column === "number" ? d.column : 0,
      path: typeof d.path === "string" ? d.path : "",
      message: typeof d.message === "string" ? d.message : String(d.message ?? "problem"),
      suggestion: typeof d.suggestion === "string" ? d.suggestion : null,
    }));
}
