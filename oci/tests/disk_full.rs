//! A full disk is reported as `DiskFull` and leaves nothing behind, whether it
//! strikes while a blob downloads or while a layer unpacks. The store lives on a
//! 1 MiB tmpfs mounted in a private mount namespace of a child process (this
//! test binary again, running `disk_full_child`), so the mount vanishes with the
//! child and nothing on the host is touched. Needs root (as the host agent runs).

mod common;

use std::process::Command;

use anyhow::{bail, Context, Result};
use common::{ImageSpec, Layer, Registry};
use pinacle_oci::{Credentials, OciError, Reference, Store};

#[tokio::test]
async fn disk_full_is_reported_and_leaves_nothing() -> Result<()> {
    let reg = Registry::start(None)?;
    // 3 MiB that does not compress: the download itself overflows 1 MiB.
    let noise: Vec<u8> = (0u32..3 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    reg.push(
        ImageSpec::new().layer(Layer::new().uncompressed().file("noise", &noise, 0o644)),
        "full/download:v1",
    )?;
    // 4 MiB of zeros: a tiny blob that overflows the disk when unpacked.
    reg.push(
        ImageSpec::new().layer(Layer::new().file("zeros", &vec![0u8; 4 << 20], 0o644)),
        "full/unpack:v1",
    )?;
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=1m pinacle-oci-test "$0" && exec "$1" disk_full_child --exact --ignored --nocapture"#)
        .arg(dir.path())
        .arg(&exe)
        .env("OCI_TEST_STORE", dir.path())
        .env("OCI_TEST_REGISTRY", reg.host())
        .output()
        .context("running unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("DISK_FULL_CHECKED download unpack") {
        bail!(
            "child failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The tmpfs was private to the child: nothing was written here.
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

/// Runs inside the child's tmpfs; fails when started any other way.
#[tokio::test]
#[ignore = "started by disk_full_is_reported_and_leaves_nothing inside a private 1 MiB tmpfs"]
async fn disk_full_child() -> Result<()> {
    let dir = std::env::var("OCI_TEST_STORE").context("OCI_TEST_STORE unset")?;
    let host = std::env::var("OCI_TEST_REGISTRY").context("OCI_TEST_REGISTRY unset")?;
    let store = Store::new(format!("{dir}/store"), vec![host.clone()])?;
    let mut checked = Vec::new();
    for (what, name) in [
        ("download", "full/download:v1"),
        ("unpack", "full/unpack:v1"),
    ] {
        let r = Reference::parse(&format!("{host}/{name}"))?;
        match store.pull(&r, &Credentials::Anonymous, &|_| {}).await {
            Err(e @ OciError::DiskFull { .. }) => {
                assert!(e.to_string().contains("no space left"), "{e}");
            }
            other => bail!("{what}: expected DiskFull, got {other:?}"),
        }
        assert!(
            store.list().await?.is_empty(),
            "{what}: an image is visible"
        );
        assert_eq!(
            std::fs::read_dir(store.dir().join("blobs/tmp"))?.count(),
            0,
            "{what}: temp blobs left"
        );
        assert_eq!(
            std::fs::read_dir(store.dir().join("images"))?.count(),
            0,
            "{what}: scratch left"
        );
        checked.push(what);
    }
    println!("DISK_FULL_CHECKED {}", checked.join(" "));
    Ok(())
}
