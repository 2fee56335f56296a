//! Pulls one image into a store and prints what it got and how fast.
//!
//! `cargo run --release -p pinacle-oci --example pull -- STORE_DIR REFERENCE [INSECURE_REGISTRY...]`
//! Credentials, if any, come from `OCI_USERNAME` and `OCI_PASSWORD`.
//! The last line is machine-readable: `bytes=N seconds=S`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use pinacle_oci::{Credentials, PullPhase, Reference, Store};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(reference)) = (args.next(), args.next()) else {
        bail!("usage: pull STORE_DIR REFERENCE [INSECURE_REGISTRY...]");
    };
    let insecure: Vec<String> = args.collect();
    let creds = match (std::env::var("OCI_USERNAME"), std::env::var("OCI_PASSWORD")) {
        (Ok(username), Ok(password)) => Credentials::Basic { username, password },
        _ => Credentials::Anonymous,
    };
    let store = Store::new(&dir, insecure)?;
    let reference = Reference::parse(&reference)?;
    let start = Instant::now();
    let image = store
        .pull(&reference, &creds, &|p| {
            if matches!(p.phase, PullPhase::Unpacking | PullPhase::Cached) {
                if let Some(l) = &p.layer {
                    eprintln!(
                        "{:?} layer {}/{} {}",
                        p.phase,
                        l.index + 1,
                        l.count,
                        l.digest
                    );
                }
            }
        })
        .await
        .context("pull failed")?;
    let seconds = start.elapsed().as_secs_f64();
    println!("pinned {}", image.info.pinned);
    println!("rootfs {}", image.rootfs.display());
    println!("bytes={} seconds={seconds:.3}", image.info.size);
    Ok(())
}
