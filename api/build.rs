//! Rebuilds the crate when the web app's build output changes: release
//! builds embed `web/dist` (see `src/web_assets.rs`), whose file names
//! change with every web build.
fn main() {
    println!("cargo:rerun-if-changed=../web/dist");
    println!("cargo:rerun-if-changed=build.rs");
}
