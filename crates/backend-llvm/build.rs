//! Builds pare-runtime as a standalone static library for the host, with the same rustc that
//! builds this crate, and places it in OUT_DIR for `include_bytes!`: `pare compile` writes it
//! next to the generated object when it links an artifact. The runtime is std-only by design,
//! so a bare `rustc --crate-type staticlib` is enough and no nested cargo is needed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("../runtime/src");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    println!("cargo:rerun-if-changed={}", src.display());
    let lib = out.join("libpare_runtime.a");
    let status = Command::new(&rustc)
        .args([
            "--crate-type",
            "staticlib",
            "--crate-name",
            "pare_runtime",
            "--edition",
            "2021",
        ])
        .args([
            "-C",
            "opt-level=3",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=4",
        ])
        .args(["-C", "debuginfo=0", "-C", "strip=debuginfo"])
        .arg("-o")
        .arg(&lib)
        .arg(src.join("lib.rs"))
        .status()
        .expect("run rustc for the runtime static library");
    assert!(status.success(), "building libpare_runtime.a failed");
}
