//! Runs the file tests under tests/filetests/fuse with this crate's passes (the workspace-wide
//! runner in tests/tests/filetests.rs runs them too, with every pass registered).

use pare_pass::{filetest, Registry};
use std::path::PathBuf;

#[test]
fn fuse_filetests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/fuse");
    let mut reg = Registry::new();
    pare_fuse::register(&mut reg);
    let (n, failures, blessed) = filetest::run_dir(&reg, &dir);
    assert!(n > 0, "no file tests found in {}", dir.display());
    let msg: Vec<String> = failures
        .iter()
        .map(|(f, e)| format!("{}:\n{e}", f.display()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} file tests failed:\n{}",
        failures.len(),
        msg.join("\n\n")
    );
    eprintln!("{n} file tests passed ({blessed} blessed)");
}
