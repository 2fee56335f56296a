//! `pinacle pod shell`: an interactive terminal in a pod, over the API's
//! WebSocket terminal (the pod supervisor's pseudo-terminal).

use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;

/// Puts the terminal in raw mode for its life and restores it after.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on stdout, if it is one.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes a winsize to the pointer.
    let ok = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Runs an interactive shell (or `command`) in `pod`; exits with its code.
pub async fn run(c: &Client, pod: &str, command: Option<String>) -> Result<ExitCode> {
    let (rows, cols) = window_size().unwrap_or((24, 80));
    let interactive_shell = command.is_none();
    let mut path = format!("/pods/{pod}/terminal?rows={rows}&cols={cols}");
    if let Some(cmd) = command {
        path.push_str("&command=");
        path.push_str(&form_urlencoded::byte_serialize(cmd.as_bytes()).collect::<String>());
    }
    let ws = c.websocket(&path).await?;
    let (mut sink, mut stream) = ws.split();
    let raw = RawMode::enter();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).context("watching the window size")?;
    let mut buf = vec![0u8; 8192];
    let mut stdin_open = true;
    // Piped input (`echo cmd | pinacle pod shell pod`) is held until the
    // shell has printed and then been quiet for 200 ms (its prompt), at
    // most 3 s: a shell that sets up its terminal after the input arrived
    // may drop it.
    let piped = !std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut held = piped && interactive_shell;
    let latest = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut release_at = latest;
    let code = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(release_at), if held => held = false,
            n = stdin.read(&mut buf), if stdin_open && !held => match n {
                Ok(0) | Err(_) => {
                    // end of input: a terminal gets ^D, which ends most shells
                    stdin_open = false;
                    let _ = sink.send(Message::Binary(vec![4u8].into())).await;
                }
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break 255;
                    }
                }
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = window_size() {
                    let resize = serde_json::json!({"resize": {"rows": rows, "cols": cols}}).to_string();
                    let _ = sink.send(Message::Text(resize.into())).await;
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    if held {
                        release_at = latest.min(tokio::time::Instant::now() + std::time::Duration::from_millis(200));
                    }
                    let _ = stdout.write_all(&data).await;
                    let _ = stdout.flush().await;
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) {
                        if let Some(code) = v["exit"]["code"].as_i64() {
                            break i32::try_from(code).unwrap_or(255);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break 255,
            },
        }
    };
    drop(raw);
    Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255)))
}
