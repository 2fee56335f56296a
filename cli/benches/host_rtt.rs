//! Round trips to pods through the API, per pod: an exec of `true`
//! (`POST /api/v1/pods/{pod}/exec`) and a terminal keystroke's echo (one
//! byte over the pod's terminal WebSocket, timed until it comes back).
//! Used by `scripts/bench/remote-host.sh`, which passes a pod on the
//! in-process host and one on a remote agent's host:
//!
//! `cargo bench -p pinacle --bench host_rtt -- API TOKEN N LABEL=POD ...`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{handshake::client::generate_key, http::Request, Message};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn row(what: &str, label: &str, mut times: Vec<Duration>) {
    times.sort();
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64 * 1000.0;
    println!("{what:<16} {label:<22} {:>6} {:>9.3} {:>9.3} {mean:>9.3}", times.len(), pct(&times, 0.5), pct(&times, 0.99));
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [api, token, n, pods @ ..] = args.as_slice() else {
        eprintln!("usage: host_rtt API TOKEN N LABEL=POD ...");
        return;
    };
    let n: usize = n.parse().expect("N");
    let http = reqwest::Client::new();
    println!("{:<16} {:<22} {:>6} {:>9} {:>9} {:>9}", "round trip", "pod", "n", "p50_ms", "p99_ms", "mean_ms");
    for pod in pods {
        let (label, pod) = pod.split_once('=').expect("LABEL=POD");
        // exec `true` through the API
        let exec = || async {
            let r = http
                .post(format!("{api}/api/v1/pods/{pod}/exec"))
                .bearer_auth(token)
                .json(&serde_json::json!({"command": ["true"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "exec in {pod}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["exit_code"], 0, "{v}");
        };
        for _ in 0..5 {
            exec().await;
        }
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            exec().await;
            times.push(t.elapsed());
        }
        row("exec true", label, times);

        // one keystroke on the terminal, until its echo
        let url = format!("{}/api/v1/pods/{pod}/terminal?rows=24&cols=80", api.replace("http://", "ws://"));
        let req = Request::builder()
            .uri(&url)
            .header("host", api.trim_start_matches("http://"))
            .header("authorization", format!("Bearer {token}"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", generate_key())
            .body(())
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("terminal");
        // `cat` echoes what it reads through the pty: one byte in, the
        // same byte back (the pty's echo), with nothing else on screen
        ws.send(Message::Binary(b"stty -icanon; exec cat\n".to_vec().into())).await.unwrap();
        let drain_until_quiet = async {
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {}
        };
        drain_until_quiet.await;
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let key = [b'a' + (i % 26) as u8];
            let t = Instant::now();
            ws.send(Message::Binary(key.to_vec().into())).await.unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("echo in time") {
                    Some(Ok(Message::Binary(d))) if d.contains(&key[0]) => break,
                    Some(Ok(_)) => {}
                    other => panic!("terminal ended: {other:?}"),
                }
            }
            if i >= 10 {
                times.push(t.elapsed());
            }
        }
        let _ = ws.close(None).await;
        row("keystroke echo", label, times);
    }
}
