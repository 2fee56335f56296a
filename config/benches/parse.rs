//! Parse + validate + resolve time of a large pinacle.yaml, beside a bare
//! YAML load of the same text (the floor: what reading YAML costs without
//! any checking). Run with `cargo bench -p pinacle-config --bench parse`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use pinacle_config::resolve::resolve;
use pinacle_config::{parse, ParseOptions};
use saphyr::{LoadableYamlNode, MarkedYaml};

/// A pinacle.yaml far larger than real ones: 200 processes, 200 tabs,
/// 500 environment variables, 100 ports, multi-line install scripts.
fn large_config() -> String {
    let mut s = String::from("# Pinacle Pod Configuration\nversion: \"1.0\"\nname: big-app\ntemplate: nodejs-blank\ntier: dev.xlarge\n");
    s.push_str("services:\n  - claude-code\n  - code-server\n  - web-terminal\n  - postgres\n  - redis\n  - jupyter\n");
    s.push_str("install: |\n");
    for i in 0..100 {
        s.push_str(&format!("  npm ci --workspace packages/pkg-{i}\n"));
    }
    s.push_str("processes:\n");
    for i in 0..200 {
        s.push_str(&format!(
            "  - name: svc{i}\n    displayName: Service {i}\n    startCommand:\n      - cd services/svc{i}\n      - npm run dev -- --port {}\n    url: http://localhost:{}\n    healthCheck: curl -fsS http://localhost:{}/health\n",
            3000 + i,
            3000 + i,
            3000 + i
        ));
    }
    s.push_str("tabs:\n");
    for i in 0..200 {
        s.push_str(&format!("  - name: Service {i}\n    url: http://localhost:{}\n", 3000 + i));
    }
    s.push_str("env:\n");
    for i in 0..500 {
        s.push_str(&format!("  VAR_{i}: value-{i}\n"));
    }
    s.push_str("secrets: [ANTHROPIC_API_KEY, DATABASE_URL]\nports:\n");
    for i in 0..100 {
        s.push_str(&format!("  - port: {}\n    public: {}\n", 3000 + i, i % 2 == 0));
    }
    s.push_str("postStart: echo started\nidleTimeout: 2h\n");
    s
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn time<F: FnMut()>(iterations: usize, mut f: F) -> (f64, f64) {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples: Vec<f64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.95))
}

fn main() {
    let text = large_config();
    let small = include_str!("../../templates/vite/pinacle.yaml");
    let (config, _) = parse("big.yaml", &text, ParseOptions { strict: true }).expect("the benchmark file is valid");
    let def = resolve(&config);
    println!(
        "large pinacle.yaml: {} KiB, {} lines, {} processes, {} tabs, {} env vars",
        text.len() / 1024,
        text.lines().count(),
        def.processes.processes.len(),
        def.tabs.len(),
        config.env.len()
    );
    println!("{:<52} {:>12} {:>12} {:>10}", "", "p50 (µs)", "p95 (µs)", "MiB/s");
    for (label, input, iterations) in [("large", text.as_str(), 200usize), ("template (vite)", small, 5000)] {
        let (p50, p95) = time(iterations, || {
            let _ = MarkedYaml::load_from_str(input).expect("yaml");
        });
        let mibs = input.len() as f64 / (p50 / 1e6) / (1024.0 * 1024.0);
        println!("{:<52} {:>12.1} {:>12.1} {:>10.1}", format!("{label}: bare YAML load (saphyr, reference)"), p50, p95, mibs);
        let (p50, p95) = time(iterations, || {
            let (c, _) = parse("bench.yaml", input, ParseOptions { strict: true }).expect("valid");
            let _ = resolve(&c);
        });
        let mibs = input.len() as f64 / (p50 / 1e6) / (1024.0 * 1024.0);
        println!("{:<52} {:>12.1} {:>12.1} {:>10.1}", format!("{label}: parse + validate + resolve"), p50, p95, mibs);
    }
    let broken = text.replace("tier: dev.xlarge", "tier: dev.xlarg").replace("  - redis\n", "  - rediss\n");
    let (p50, p95) = time(200, || {
        let _ = parse("bench.yaml", &broken, ParseOptions { strict: true }).expect_err("invalid");
    });
    println!("{:<52} {:>12.1} {:>12.1}", "large, 2 errors: parse + report", p50, p95);
    // the review's alias bomb (security finding #5): one 128 KiB anchored
    // string and ~43k aliases in 256 KiB, and the 1 MiB variant; each is
    // refused once the expansion passes the bound, after a few MiB
    for (label, refs) in [("alias bomb, 256 KiB: refused", 43_000usize), ("alias bomb, 1 MiB: refused", 300_000)] {
        let bomb = alias_bomb(refs);
        let (p50, p95) = time(50, || {
            let e = parse("bomb.yaml", &bomb, ParseOptions { strict: true }).expect_err("refused");
            assert!(e.0[0].message.contains("expand"), "{e}");
        });
        println!("{:<52} {:>12.1} {:>12.1}", format!("{label} ({} KiB)", bomb.len() / 1024), p50, p95);
    }
}

/// `name: &x "AAAA…128KiB"` then `refs` references to it.
fn alias_bomb(refs: usize) -> String {
    let mut s = format!("name: &x \"{}\"\nenv:\n  A: [", "A".repeat(128 << 10));
    s.push_str(&vec!["*x"; refs].join(","));
    s.push_str("]\n");
    assert!(s.len() <= 1 << 20, "{}", s.len());
    s
}
