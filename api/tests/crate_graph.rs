//! The control plane never links the host agent: `pinacle-api` (and the
//! SSH gateway and proxy built on it) reach hosts only through the
//! contract crate, `pinacle-host-api`. Checked on the real dependency
//! graph with `cargo tree`.

use std::process::Command;

fn normal_dependencies(package: &str) -> String {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running cargo tree: {e}"));
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_control_plane_does_not_link_the_host_agent() {
    for package in ["pinacle-api", "pinacle-ssh-gateway", "pinacle-proxy", "pinacle-host-api", "pinacle-queue"] {
        let tree = normal_dependencies(package);
        assert!(!tree.lines().any(|l| l.starts_with("pinacle-host-agent ")), "{package} depends on pinacle-host-agent:\n{tree}");
    }
    // the contract is what the control plane uses to reach hosts
    assert!(normal_dependencies("pinacle-api").lines().any(|l| l.starts_with("pinacle-host-api ")));
    // and the composition root links both sides
    let cli = normal_dependencies("pinacle");
    assert!(cli.lines().any(|l| l.starts_with("pinacle-host-agent ")) && cli.lines().any(|l| l.starts_with("pinacle-api ")));
}
