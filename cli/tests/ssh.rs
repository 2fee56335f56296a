//! The SSH gateway with Debian's OpenSSH client against a real `pinacle up`
//! and real youki pods: sign-in with a registered key and a trusted host
//! certificate, commands and exit codes, a pty, scp of 100 MB with matching
//! checksums, sftp, `-L` forwarding to a server in the pod, `-R` to a server beside the
//! client (and refused where not allowed),
//! `pinacle ssh` certificates, the refusals (unknown key, another user, a
//! certificate from another CA, for another pod, expired), pod key rotation,
//! the audit trail, brute-force limiting and the idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/ssh_client.rs"]
mod ssh_client;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, pinacle_bin, KillOnDrop, Pinacle};
use ssh_client::Client;
use reqwest::Method;
use serde_json::json;

/// Bytes the echo server beside the client sends back through `ssh -R`.
const ECHO_BYTES: usize = 4 << 20;

/// What the client-side server sends for `/big` through `ssh -R`.
fn big_body() -> Vec<u8> {
    (0..8u32 << 20).map(|i| (i % 251) as u8).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// Runs the `pinacle` CLI against the test server.
fn cli(p: &Pinacle, args: &[&str]) -> Output {
    Command::new(pinacle_bin())
        .args(args)
        .env("PINACLE_CONFIG", p.data.path().join("cli.json"))
        .env("PINACLE_KEYRING", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}


fn refused(out: &Output) -> bool {
    out.status.code() == Some(255) && text(&out.stderr).contains("Permission denied")
}

#[tokio::test]
async fn openssh_clients_reach_pods_through_the_gateway() {
    let port = free_port();
    let p = Pinacle::start_with(&["--ssh-listen", &format!("127.0.0.1:{port}"), "--ssh-host", "127.0.0.1", "--ssh-allow-remote-forward"]).await;
    p.create_running("box", "minimal", "youki").await;
    let c = Client::new(&p, port).await;

    // a key registered with the CLI signs in; the host is trusted through
    // the host CA (StrictHostKeyChecking=yes with only a CA line)
    let key = c.keygen("id_admin");
    let added = cli(&p, &["ssh-key", "add", &format!("{}.pub", key.display())]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let listed = text(&cli(&p, &["ssh-key", "list"]).stdout);
    assert!(listed.contains("id_admin"), "{listed}");

    let out = c.ssh(&key, "box", &["-o", "SetEnv=LANG=C.UTF-8 PATH=/evil"], "echo hi; pwd; echo lang=$LANG; echo path=$PATH; exit 3");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "exit status passes through: {stdout} {}", text(&out.stderr));
    assert!(stdout.starts_with("hi\n/workspace\nlang=C.UTF-8\n"), "{stdout}");
    assert!(!stdout.contains("path=/evil"), "PATH is not the client's: {stdout}");

    // a pty with its size
    let out = c.ssh(&key, "box", &["-tt"], "tty; echo TERM=$TERM");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/"), "{stdout}");

    // scp 100 MB there and back (OpenSSH 9's scp speaks SFTP)
    let big = c.dir.path().join("big.bin");
    let dd = Command::new("dd").args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"]).arg(format!("of={}", big.display())).status().unwrap();
    assert!(dd.success());
    let want = sha256_of(&big);
    let scp = |from: &str, to: &str| {
        let mut cmd = Command::new("timeout");
        cmd.arg("120").arg("scp").args(c.base_args(&key)).args(["-P", &port.to_string(), from, to]);
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let out = scp(&big.display().to_string(), "box@127.0.0.1:big.bin");
    assert!(out.status.success(), "scp up: {}", text(&out.stderr));
    let out = c.ssh(&key, "box", &[], "sha256sum /workspace/big.bin");
    assert_eq!(text(&out.stdout).split_whitespace().next(), Some(want.as_str()), "{}", text(&out.stderr));
    let back = c.dir.path().join("back.bin");
    let out = scp("box@127.0.0.1:/workspace/big.bin", &back.display().to_string());
    assert!(out.status.success(), "scp down: {}", text(&out.stderr));
    assert_eq!(sha256_of(&back), want);

    // sftp lists the workspace
    let batch = c.dir.path().join("batch");
    std::fs::write(&batch, "cd /workspace\nls -l\nmkdir made-by-sftp\n").unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg("sftp").args(c.base_args(&key)).args(["-P", &port.to_string(), "-b"]).arg(&batch).arg("box@127.0.0.1");
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("big.bin"), "{}", text(&out.stdout));
    let out = c.ssh(&key, "box", &[], "test -d /workspace/made-by-sftp && echo made");
    assert_eq!(text(&out.stdout), "made\n");

    // -L reaches a server that listens on the pod's own loopback
    let pod_port = 20000 + (std::process::id() % 10000) as u16;
    let out = c.ssh(
        &key,
        "box",
        &[],
        &format!("mkdir -p /workspace/www && echo forwarded-from-pod > /workspace/www/index.html && busybox httpd -p 127.0.0.1:{pod_port} -h /workspace/www && echo started"),
    );
    assert_eq!(text(&out.stdout), "started\n", "{}", text(&out.stderr));
    let local = free_port();
    let mut forward = Command::new("ssh")
        .args(c.base_args(&key))
        .args(["-p", &port.to_string(), "-N", "-L", &format!("127.0.0.1:{local}:localhost:{pod_port}"), "box@127.0.0.1"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{local}/")).await {
            break r.text().await.unwrap();
        }
        if Instant::now() > deadline {
            let _ = forward.kill();
            let out = forward.wait_with_output().unwrap();
            panic!("the forward never answered: {}\n{}", text(&out.stderr), p.server_log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "forwarded-from-pod\n");
    let _ = forward.kill();
    let _ = forward.wait();

    // a client that goes away takes its command with it
    let mut sleeper = Command::new("ssh")
        .args(c.base_args(&key))
        .args(["-p", &port.to_string(), "box@127.0.0.1", "sleep 321"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let count = || text(&c.ssh(&key, "box", &[], "ps | grep -c '[s]leep 321'").stdout).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() != "1" {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sleeper.kill().unwrap();
    let _ = sleeper.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() != "0" {
        assert!(Instant::now() < deadline, "the command outlived its client");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // -R (allowed on this gateway): a port on the pod's loopback reaches
    // a server on the client's side, once per connection made in the pod
    let served = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client_port = served.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in served.incoming().take(1000) {
            let Ok(mut conn) = conn else { continue };
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match std::io::Read::read(&mut conn, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = if seen.starts_with(b"GET /big ") { big_body() } else { b"from-the-client\n".to_vec() };
            let _ = std::io::Write::write_all(&mut conn, format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
            let _ = std::io::Write::write_all(&mut conn, &body);
        }
    });
    // and an echo server, for both directions at once
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in echo.incoming().take(100) {
            let Ok(mut conn) = conn else { continue };
            // echoes ECHO_BYTES, then closes
            std::thread::spawn(move || {
                let mut left = ECHO_BYTES;
                let mut buf = [0u8; 16 * 1024];
                while left > 0 {
                    let n = match std::io::Read::read(&mut conn, &mut buf[..left.min(16 * 1024)]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if std::io::Write::write_all(&mut conn, &buf[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    let (remote_port, echo_remote_port) = (pod_port + 1, pod_port + 2);
    // two forwards on one connection
    let mut reverse = KillOnDrop(
        Command::new("ssh")
            .args(c.base_args(&key))
            .args(["-p", &port.to_string(), "-N", "-o", "ExitOnForwardFailure=yes"])
            .args(["-R", &format!("{remote_port}:127.0.0.1:{client_port}"), "-R", &format!("{echo_remote_port}:127.0.0.1:{echo_port}"), "box@127.0.0.1"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let fetch = format!("busybox wget -q -O - http://127.0.0.1:{remote_port}/");
    // (generous: this machine is sometimes very slow; the loop ends as
    // soon as both requests come back)
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = text(&c.ssh(&key, "box", &[], &format!("({fetch}; {fetch}) 2>&1")).stdout);
        if got == "from-the-client\nfrom-the-client\n" {
            break;
        }
        if Instant::now() > deadline {
            let _ = reverse.0.kill();
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut reverse.0.stderr.take().unwrap(), &mut stderr);
            panic!("the remote forward never answered ({got:?}): {stderr}\n{}", p.server_log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // 8 MiB come through intact
    let out = c.ssh(&key, "box", &[], &format!("busybox wget -q -O - http://127.0.0.1:{remote_port}/big | sha256sum"));
    let want = { use sha2::Digest; format!("{:x}", sha2::Sha256::digest(big_body())) };
    assert_eq!(text(&out.stdout).split_whitespace().next(), Some(want.as_str()), "{}", text(&out.stderr));
    // 4 MiB out and echoed back at the same time, intact
    let out = c.ssh(
        &key,
        "box",
        &[],
        &format!("head -c {ECHO_BYTES} /dev/urandom > /tmp/out && timeout 60 nc 127.0.0.1 {echo_remote_port} < /tmp/out > /tmp/back; sha256sum /tmp/out /tmp/back"),
    );
    let stdout = text(&out.stdout);
    let sums: Vec<&str> = stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(sums.len() == 2 && sums[0] == sums[1], "echo through -R: {sums:?} {}", text(&out.stderr));
    // the pod listens while the client is there, and not once it has left
    let listening = |port: u16| {
        let cmd = format!("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\" {{print $2}}' | grep -ci ':{port:04X}$'");
        text(&c.ssh(&key, "box", &[], &cmd).stdout).trim() != "0"
    };
    assert!(listening(remote_port) && listening(echo_remote_port));
    drop(reverse);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening(remote_port) || listening(echo_remote_port) {
        assert!(Instant::now() < deadline, "the pod kept listening after the client left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `pinacle ssh` signs in with a fresh certificate
    let out = cli(&p, &["ssh", "box", "--", "echo", "via-certificate"]);
    assert!(out.status.success(), "pinacle ssh: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "via-certificate\n");
    let out = cli(&p, &["ssh", "box", "--", "exit", "7"]);
    assert_eq!(out.status.code(), Some(7), "the exit code passes through");
    let config = text(&cli(&p, &["ssh-config"]).stdout);
    assert!(config.contains("Host box.pinacle") && config.contains(&format!("Port {port}")), "{config}");

    // refusals before any channel: an unknown key
    let stranger = c.keygen("id_stranger");
    assert!(refused(&c.ssh(&stranger, "box", &[], "true")));
    // a pod that does not exist
    assert!(refused(&c.ssh(&key, "nope", &[], "true")));
    // another user's key for this pod
    let bob = p.signup_and_login("bob").await;
    let bob_key = c.keygen("id_bob");
    let (s, b) = p.add_ssh_key_as(&bob, "bob", &bob_key).await;
    assert_eq!(s, 201, "{b}");
    assert!(refused(&c.ssh(&bob_key, "box", &[], "true")), "bob may not enter admin's pod");
    // bob may not have a certificate for it either
    let (s, b) = p
        .call_as(&bob, Method::POST, "/api/v1/pods/box/ssh-certificate", Some(json!({"public_key": std::fs::read_to_string(format!("{}.pub", bob_key.display())).unwrap()})))
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{b}");

    // certificates: one from the platform works only for its pod...
    let cert_key = c.keygen("id_cert");
    let pubkey = std::fs::read_to_string(format!("{}.pub", cert_key.display())).unwrap();
    let (s, cert) = p.call(Method::POST, "/api/v1/pods/box/ssh-certificate", Some(json!({"public_key": pubkey}))).await;
    assert_eq!(s, 201, "{cert}");
    std::fs::write(format!("{}-cert.pub", cert_key.display()), format!("{}\n", cert["certificate"].as_str().unwrap())).unwrap();
    let out = c.ssh(&cert_key, "box", &[], "echo cert-ok");
    assert_eq!(text(&out.stdout), "cert-ok\n", "{}", text(&out.stderr));
    // (the other pod is a team's: `pod.team` names it)
    let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, other) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "other", "template": "minimal", "runtime": "youki", "team": "acme"}))).await;
    assert_eq!(s, 202, "{other}");
    p.wait_state(other["id"].as_str().unwrap(), "running", 120).await;
    let out = c.ssh(&key, "other.acme", &[], "echo in-team-pod");
    assert_eq!(text(&out.stdout), "in-team-pod\n", "{}", text(&out.stderr));
    assert!(refused(&c.ssh(&cert_key, "other.acme", &[], "true")), "a certificate for another pod");
    let config = text(&cli(&p, &["ssh-config"]).stdout);
    assert!(config.contains("Host other.acme.pinacle") && config.contains("User other.acme"), "{config}");
    // `pinacle ssh` to a team pod, with ssh options before the command
    let out = cli(&p, &["ssh", "acme/other", "--", "-o", "SetEnv=LANG=C.UTF-8", "echo", "$LANG", "$PINACLE_POD"]);
    assert_eq!(text(&out.stdout), "C.UTF-8 other\n", "{}", text(&out.stderr));
    // ...one signed by another CA is refused
    let rogue_ca = c.keygen("rogue_ca");
    let rogue = c.keygen("id_rogue");
    let admin_id = p.call(Method::GET, "/api/v1/me", None).await.1["id"].as_str().unwrap().to_owned();
    let box_id = p.pod("box").await["id"].as_str().unwrap().to_owned();
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&rogue_ca)
        .args(["-I", &format!("pinacle-user:{admin_id}"), "-n", &box_id, "-V", "-5m:+10m"])
        .arg(format!("{}.pub", rogue.display()))
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", text(&signed.stderr));
    assert!(refused(&c.ssh(&rogue, "box", &[], "true")), "a certificate from another CA");

    // the pod's own key: present, rotated atomically, the pod still usable
    let (s, before) = p.call(Method::GET, "/api/v1/pods/box/ssh-key", None).await;
    assert_eq!(s, 200, "{before}");
    let in_pod = text(&c.ssh(&key, "box", &[], "cat ~/.ssh/id_ed25519.pub").stdout);
    assert_eq!(in_pod.trim(), before["public_key"].as_str().unwrap());
    let rotated = cli(&p, &["pod", "rotate-keys", "box"]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let new_key = text(&rotated.stdout).trim().to_owned();
    assert_ne!(new_key, before["public_key"].as_str().unwrap());
    let out = c.ssh(&key, "box", &[], "cat ~/.ssh/id_ed25519.pub; ls -la ~/.ssh | grep -c id_ed25519; head -1 ~/.ssh/id_ed25519");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("{new_key}\n2\n-----BEGIN OPENSSH PRIVATE KEY-----")), "{stdout}");

    // every session is in the audit log, start and end
    let (_, audit) = p.call(Method::GET, "/api/v1/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.iter().filter(|a| **a == "ssh.session.start").count() >= 8, "{actions:?}");
    let targets: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["target"].as_str()).collect();
    assert!(targets.iter().any(|t| t.contains(&format!("remote forward of port {}", pod_port + 2))), "the -R forward is audited: {targets:?}");
    assert!(actions.contains(&"ssh.session.end") && actions.contains(&"ssh.certificate") && actions.contains(&"pod.rotate_keys"), "{actions:?}");
    let metrics = p.http.get(format!("{}/metrics", p.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pinacle_ssh_sessions_total{kind=\"sftp\"}") && metrics.contains("pinacle_ssh_sessions_total{kind=\"remote-forward\"}") && metrics.contains("pinacle_ssh_sign_ins_total{outcome=\"refused\"}"), "{metrics}");
}

#[tokio::test]
async fn the_gateway_limits_failed_sign_ins_expired_certificates_and_idle_connections() {
    let port = free_port();
    let p = Pinacle::start_with(&[
        "--ssh-listen",
        &format!("127.0.0.1:{port}"),
        "--ssh-max-auth-failures",
        "3",
        "--ssh-idle-timeout",
        "2",
        "--ssh-cert-lifetime",
        "1",
    ])
    .await;
    p.create_running("lim", "minimal", "youki").await;
    let c = Client::new(&p, port).await;
    let key = c.keygen("id_ok");
    let (s, b) = p.add_ssh_key_as(common::TOKEN, "ok", &key).await;
    assert_eq!(s, 201, "{b}");

    // an expired certificate (this server issues 1-second ones)
    let cert_key = c.keygen("id_cert");
    let (s, cert) = p
        .call(Method::POST, "/api/v1/pods/lim/ssh-certificate", Some(json!({"public_key": std::fs::read_to_string(format!("{}.pub", cert_key.display())).unwrap()})))
        .await;
    assert_eq!(s, 201, "{cert}");
    std::fs::write(format!("{}-cert.pub", cert_key.display()), format!("{}\n", cert["certificate"].as_str().unwrap())).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(refused(&c.ssh(&cert_key, "lim", &[], "true")), "an expired certificate");

    // -R is refused on a gateway that does not allow it, and the client
    // says so
    let out = c.ssh(&key, "lim", &["-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:9"], "");
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("remote port forwarding failed"), "{}", text(&out.stderr));

    // an idle connection is closed: `sleep 30` sends nothing for 30 s
    let t0 = Instant::now();
    let out = c.ssh(&key, "lim", &[], "sleep 30");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert!(t0.elapsed() < Duration::from_secs(20), "closed after {:?}", t0.elapsed());

    // brute force: the expired certificate was one failed sign-in (its
    // connection counts once, whatever keys it tried); a second one still
    // leaves the right key working, a third blocks the address
    let stranger = c.keygen("id_stranger");
    assert!(refused(&c.ssh(&stranger, "lim", &[], "true")));
    let out = c.ssh(&key, "lim", &[], "echo still-in");
    assert_eq!(text(&out.stdout), "still-in\n", "two failures are under the limit: {}", text(&out.stderr));
    assert!(refused(&c.ssh(&stranger, "lim", &[], "true")));
    assert!(refused(&c.ssh(&key, "lim", &[], "true")), "the address is blocked");
    assert!(p.server_log().contains("too many failed sign-ins"), "the refusal is logged");
}

/// `ssh -M -S ctl -N LOGIN`: a control master in the background; waits
/// until it is up.
fn control_master(c: &Client, key: &Path, login: &str, ctl: &Path) -> KillOnDrop {
    let child = Command::new("ssh")
        .args(c.base_args(key))
        .args(["-p", &c.port.to_string(), "-M", "-S"])
        .arg(ctl)
        .args(["-o", "ControlPersist=no", "-N"])
        .arg(format!("{login}@127.0.0.1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let master = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = Command::new("ssh").args(["-S"]).arg(ctl).args(["-O", "check", "x"]).output().unwrap();
        if check.status.success() {
            return master;
        }
        assert!(Instant::now() < deadline, "the control master did not come up: {}", text(&check.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ssh -S ctl LOGIN COMMAND` through a running master, bounded in time
/// (it falls back to a connection of its own if the master is gone).
fn through(c: &Client, key: &Path, ctl: &Path, login: &str, command: &str) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("ssh")
        .args(c.base_args(key))
        .args(["-p", &c.port.to_string(), "-S"])
        .arg(ctl)
        .arg(format!("{login}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn an_open_connection_loses_the_pod_when_its_user_loses_access() {
    let port = free_port();
    let p = Pinacle::start_with(&["--ssh-listen", &format!("127.0.0.1:{port}"), "--ssh-host", "127.0.0.1"]).await;
    let (s, b) = p.call(Method::POST, "/api/v1/teams", Some(json!({"name": "acme"}))).await;
    assert_eq!(s, 201, "{b}");
    let (s, pod) = p.call(Method::POST, "/api/v1/pods", Some(json!({"name": "shared", "template": "minimal", "runtime": "gvisor", "team": "acme"}))).await;
    assert_eq!(s, 202, "{pod}");
    let bob = p.signup_and_login("bob").await;
    let c = Client::new(&p, port).await;
    let key = c.keygen("id_bob");
    let (s, added) = p.add_ssh_key_as(&bob, "bob", &key).await;
    assert_eq!(s, 201, "{added}");
    p.wait_state(pod["id"].as_str().unwrap(), "running", 120).await;
    let join = || p.call(Method::POST, "/api/v1/teams/acme/members", Some(json!({"user": "bob", "role": "member"})));
    let (s, b) = join().await;
    assert!(s == 200 || s == 201, "{s} {b}");

    // removed from the team: no new channel on the open connection, and
    // the connection (with its running command) is closed
    let ctl = c.dir.path().join("ctl");
    let mut master = control_master(&c, &key, "shared.acme", &ctl);
    let out = through(&c, &key, &ctl, "shared.acme", "echo via-master");
    assert_eq!(text(&out.stdout), "via-master\n", "{}", text(&out.stderr));
    let long = Command::new("ssh")
        .args(c.base_args(&key))
        .args(["-p", &port.to_string(), "-S"])
        .arg(&ctl)
        .args(["shared.acme@127.0.0.1", "sleep 120"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut long = KillOnDrop(long);
    let (s, b) = p.call(Method::DELETE, "/api/v1/teams/acme/members/bob", None).await;
    assert!(s == 200 || s == 204, "{s} {b}");
    let out = through(&c, &key, &ctl, "shared.acme", "id");
    assert_ne!(out.status.code(), Some(0), "a removed member opened a channel: {}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("uid="), "{}", text(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(30);
    while long.0.try_wait().unwrap().is_none() || master.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the open session and its connection outlived the membership");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // back in the team, then the key is deleted: the same
    let (s, b) = join().await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let ctl = c.dir.path().join("ctl2");
    let mut master = control_master(&c, &key, "shared.acme", &ctl);
    let out = through(&c, &key, &ctl, "shared.acme", "echo again");
    assert_eq!(text(&out.stdout), "again\n", "{}", text(&out.stderr));
    let (s, b) = p.call_as(&bob, Method::DELETE, &format!("/api/v1/ssh-keys/{}", added["id"].as_str().unwrap()), None).await;
    assert!(s == 200 || s == 204, "{s} {b}");
    let out = through(&c, &key, &ctl, "shared.acme", "id");
    assert_ne!(out.status.code(), Some(0), "a deleted key opened a channel: {}", text(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(30);
    while master.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the connection outlived its key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn one_address_cannot_take_every_pre_auth_slot() {
    let port = free_port();
    let p = Pinacle::start_with(&["--ssh-listen", &format!("127.0.0.1:{port}"), "--ssh-host", "127.0.0.1"]).await;
    p.create_running("pre", "minimal", "gvisor").await;
    let c = Client::new(&p, port).await;
    let key = c.keygen("id_pre");
    let (s, b) = p.add_ssh_key_as(common::TOKEN, "pre", &key).await;
    assert_eq!(s, 201, "{b}");
    // 300 idle connections from 127.0.0.2 (more than all 256 slots)
    let mut idle = Vec::new();
    for _ in 0..300 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), sock.connect(format!("127.0.0.1:{port}").parse().unwrap())).await {
            idle.push(s);
        }
    }
    assert!(idle.len() >= 256, "{} connections", idle.len());
    // a client from 127.0.0.1 still gets in
    let out = c.ssh(&key, "pre", &[], "echo got-in");
    assert_eq!(text(&out.stdout), "got-in\n", "{}", text(&out.stderr));
    assert!(p.server_log().contains("from this address"), "the per-address cap refused the rest");
    drop(idle);
}
