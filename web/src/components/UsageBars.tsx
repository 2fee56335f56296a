import type { PodUsage, Tier } from "../api/types";
import { formatBytes, percent } from "../lib/format";

/** One bar against its limit (0–100), coloured as it fills. */
export function Meter({ label, value, text }: { label: string; value: number | null; text: string }) {
  const v = value ?? 0;
  const level = v >= 90 ? "high" : v >= 70 ? "mid" : "low";
  return (
    <div className="meter" title={`${label}: ${text}`}>
      <span className="meter-label">{label}</span>
      <div
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(v)}
        aria-valuetext={text}
        className={`meter-bar meter-${level}`}
      >
        <div className="meter-fill" style={{ width: `${v}%` }} />
      </div>
      <span className="meter-text">{text}</span>
    </div>
  );
}

/** CPU (of the tier's vCPUs), memory and disk against the tier's limits. */
export function UsageBars({ usage, tier }: { usage: PodUsage | null; tier: Tier }) {
  if (!usage) return null;
  const cpuLimit = Math.max(1, tier.vcpus) * 100;
  const cpu = usage.cpuPercent === null ? null : percent(usage.cpuPercent, cpuLimit);
  return (
    <div className="usage" aria-label="Resource usage" role="group">
      <Meter
        label="CPU"
        value={cpu}
        text={usage.cpuPercent === null ? "—" : `${Math.round(usage.cpuPercent)}% of ${tier.vcpus * 100}%`}
      />
      <Meter
        label="Memory"
        value={percent(usage.memoryBytes, usage.memoryLimitBytes)}
        text={`${formatBytes(usage.memoryBytes)} / ${formatBytes(usage.memoryLimitBytes)}`}
      />
      <Meter
        label="Disk"
        value={percent(usage.diskBytes, usage.diskLimitBytes)}
        text={`${formatBytes(usage.diskBytes)} / ${formatBytes(usage.diskLimitBytes)}`}
      />
    </div>
  );
}
