//! Runs tests/filetests/canonicalize/*.ir with a registry holding only this crate's passes
//! (each file is checked textually and numerically against the interpreter; see
//! `pare_pass::filetest`). `PARE_BLESS=1` rewrites the OUT blocks.

use std::path::Path;

#[test]
fn canonicalize_filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/canonicalize");
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    let (n, failures, blessed) = pare_pass::filetest::run_dir(&reg, &dir);
    eprintln!(
        "{n} file tests, {} failed, {blessed} blessed",
        failures.len()
    );
    for (f, e) in &failures {
        eprintln!("FAIL {}\n  {}\n", f.display(), e.replace('\n', "\n  "));
    }
    assert!(
        failures.is_empty(),
        "{} of {n} file tests failed",
        failures.len()
    );
    assert!(
        n >= 15,
        "expected the canonicalize file tests under {}",
        dir.display()
    );
}
