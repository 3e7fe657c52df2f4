//! Runs `tests/filetests/slice/*.ir` with a registry of the canonicalization passes and this
//! crate's (the workspace-wide runner in `tests/tests/filetests.rs` runs them too, with every
//! pass).

use std::path::Path;

#[test]
fn slice_filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/slice");
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_fuse::register(&mut reg);
    pare_slice::register(&mut reg);
    let (n, failures, blessed) = pare_pass::filetest::run_dir(&reg, &dir);
    for (f, e) in &failures {
        eprintln!("FAIL {}\n  {}\n", f.display(), e.replace('\n', "\n  "));
    }
    eprintln!(
        "{n} file tests, {} failed, {blessed} blessed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n} file tests failed",
        failures.len()
    );
    assert!(
        n >= 6,
        "expected the slice file tests under {}",
        dir.display()
    );
}
