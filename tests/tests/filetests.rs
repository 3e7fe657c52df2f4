//! Runs every `tests/filetests/**/*.ir` file test against the built-in registry (see
//! `pare_pass::filetest` for the format). `PARE_BLESS=1` rewrites the OUT blocks; without it a
//! stale block fails, so CI catches rewrites whose output changed.

use std::path::Path;

#[test]
fn filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests");
    let registry = pare_passes::registry();
    let (n, failures, blessed) = pare_pass::filetest::run_dir(&registry, &dir);
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
    assert!(n > 0, "no file tests found under {}", dir.display());
}
