"""Prints the AI router's benchmark figures (scripts/bench/router.sh) as
tables: `python3 scripts/bench/router_report.py RESULTS.jsonl`."""

import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r["figures"] is not None]
def get(part, target):
    return next((r["figures"] for r in rows if r["part"] == part and r["target"] == target), {})
def n(x):
    return float("nan") if x is None else x
names = {"direct": "fake provider, direct", "aion": "AION alone", "server": "AION in pinacle server", "litellm": "LiteLLM proxy 1.108.7"}
for part, title in (("rate200", "200 RPS"), ("ratemax", f"{get('ratemax', 'aion').get('rps', 0):.0f} RPS (80% of AION's highest)")):
    d = get(part, "direct")
    print(f"\n{title}: latency (ms) and added over direct (ms)")
    print(f"{'target':<26} {'ok':>7} {'err':>6} {'rps':>7} {'p50':>9} {'p99':>9} {'+p50':>9} {'+p99':>9}")
    for t in ("direct", "aion", "server", "litellm"):
        f = get(part, t)
        if not f:
            continue
        add50 = n(f["p50_ms"]) - n(d["p50_ms"]) if t != "direct" else 0.0
        add99 = n(f["p99_ms"]) - n(d["p99_ms"]) if t != "direct" else 0.0
        print(f"{names[t]:<26} {f['ok']:>7} {f['errors']:>6} {f['achieved_rps']:>7.1f} {n(f['p50_ms']):>9.3f} {n(f['p99_ms']):>9.3f} {add50:>9.3f} {add99:>9.3f}")
print("\nhighest rate, 32 connections closed-loop (requests/s, p50/p99 ms, errors)")
for t in ("direct", "aion", "server", "litellm"):
    f = get("closed", t)
    print(f"{names[t]:<26} {f['rps']:>9.0f} {n(f['p50_ms']):>8.2f} {n(f['p99_ms']):>8.2f} {f['errors']:>6}")
print("\nstreaming: time to first content chunk, 1,000 sequential (p50 / p99 ms, added p50)")
d = get("ttft", "direct")
for t in ("direct", "aion", "server", "litellm"):
    f = get("ttft", t)
    print(f"{names[t]:<26} {n(f['ttft_p50_ms']):>8.3f} {n(f['ttft_p99_ms']):>8.3f} {n(f['ttft_p50_ms']) - n(d['ttft_p50_ms']):>+8.3f}")
print("\nmemory (RSS MB): idle / peak at 200 RPS")
for t in ("aion", "server", "litellm"):
    idle = get("rss", t).get("idle_mb", "-")
    peak = next((r["figures"]["at_200_rps_peak_mb"] for r in rows if r["part"] == "rss" and r["target"] == t and "at_200_rps_peak_mb" in r["figures"]), "-")
    print(f"{names[t]:<26} {idle!s:>8} {peak!s:>8}")
w = get("wasm", "redact")
if w:
    print(f"\nWASM module (redact.wat), fresh instance + call: p50 {w['call_p50_us']:.1f} us, p99 {w['call_p99_us']:.1f} us; runaway loop past its 50 ms deadline by p50 {w['overshoot_p50_ms']:.2f} ms, at most {w['overshoot_max_ms']:.2f} ms")
print("\nlocal engine, 32-token completions (ms): first token p50/p99, whole answer p50/p95; SLO 500 ms")
for t, n in (("llama", "llama.cpp direct"), ("aion", "through AION")):
    f = get("local", t)
    if f:
        v = {k: (float("nan") if f.get(k) is None else f[k]) for k in ("ttft_p50_ms", "ttft_p99_ms", "total_p50_ms", "total_p95_ms")}
        print(f"{n:<26} {v['ttft_p50_ms']:>8.1f} {v['ttft_p99_ms']:>8.1f} {v['total_p50_ms']:>8.1f} {v['total_p95_ms']:>8.1f}  ({f.get('errors', 0)} errors)")
