import { useId, useRef } from "react";
import type { Diagnostic } from "../api/types";
import { formatDiagnostic, isError, problemLines } from "../lib/diagnostics";

interface Props {
  label: string;
  value: string;
  onChange: (v: string) => void;
  diagnostics: Diagnostic[];
  validating?: boolean;
  placeholder?: string;
}

/** A monospace textarea with line numbers; lines with problems are marked
 *  in the gutter and the problems listed under it. */
export function YamlField({ label, value, onChange, diagnostics, validating, placeholder }: Props) {
  const id = useId();
  const gutter = useRef<HTMLDivElement>(null);
  const lines = Math.max(1, value.split("\n").length);
  const marks = problemLines(diagnostics);
  const errors = diagnostics.filter(isError).length;
  const warnings = diagnostics.length - errors;
  return (
    <div className="yaml-field">
      <label htmlFor={`${id}-ta`} className="field-label">
        {label}
      </label>
      <div className="yaml-editor">
        <div className="yaml-gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => {
            const mark = marks.get(i + 1);
            return (
              <div key={i} className={mark ? `gutter-line gutter-${mark}` : "gutter-line"} data-line={i + 1} data-problem={mark}>
                {i + 1}
              </div>
            );
          })}
        </div>
        <textarea
          id={`${id}-ta`}
          value={value}
          spellCheck={false}
          wrap="off"
          placeholder={placeholder}
          aria-invalid={errors > 0}
          aria-describedby={`${id}-status`}
          onChange={(e) => onChange(e.target.value)}
          onScroll={(e) => {
            if (gutter.current) gutter.current.scrollTop = e.currentTarget.scrollTop;
          }}
        />
      </div>
      <div id={`${id}-status`} className="yaml-status" aria-live="polite">
        {validating
          ? "Checking…"
          : diagnostics.length === 0
            ? value.trim()
              ? "No problems found."
              : ""
            : `${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"}`}
      </div>
      {diagnostics.length > 0 && (
        <ul className="diagnostics" aria-label="Problems">
          {diagnostics.map((d, i) => (
            <li key={i} className={isError(d) ? "diag diag-error" : "diag diag-warning"}>
              <span className="diag-sev">{isError(d) ? "error" : "warning"}</span> {formatDiagnostic(d)}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
