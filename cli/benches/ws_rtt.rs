//! WebSocket round-trip latency: sends N small text frames one after another
//! on one connection and times each echo. Used by `scripts/bench/proxy.sh`,
//! which starts the echo server in a pod and passes the routes to compare:
//!
//! `cargo bench -p pinacle --bench ws_rtt -- N LABEL=URL[|HOST[|TOKEN]] ...`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{handshake::client::generate_key, http::Request, Message};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let Some((n, routes)) = args.split_first() else {
        eprintln!("usage: ws_rtt N LABEL=URL[|HOST[|TOKEN]] ...");
        return;
    };
    let n: usize = n.parse().expect("N");
    println!("{:<18} {:>7} {:>9} {:>9} {:>9}", "websocket via", "frames", "p50_ms", "p99_ms", "mean_ms");
    for route in routes {
        let (label, rest) = route.split_once('=').expect("LABEL=URL");
        let mut parts = rest.split('|');
        let url = parts.next().unwrap();
        let mut req = Request::builder()
            .uri(url)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", generate_key());
        let authority = url.trim_start_matches("ws://").split('/').next().unwrap().to_owned();
        req = req.header("host", parts.next().filter(|h| !h.is_empty()).unwrap_or(&authority));
        if let Some(token) = parts.next() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req.body(()).unwrap()).await.expect("websocket connect");
        // warm up
        for _ in 0..20 {
            ws.send(Message::Text("warm".into())).await.unwrap();
            ws.next().await.unwrap().unwrap();
        }
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            ws.send(Message::Text(format!("ping {i}").into())).await.unwrap();
            let back = ws.next().await.unwrap().unwrap();
            times.push(t.elapsed());
            assert_eq!(back.into_text().unwrap().as_str(), format!("ping {i}"));
        }
        let _ = ws.close(None).await;
        times.sort();
        let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / n as f64 * 1000.0;
        println!("{label:<18} {n:>7} {:>9.3} {:>9.3} {mean:>9.3}", pct(&times, 0.5), pct(&times, 0.99));
    }
}
