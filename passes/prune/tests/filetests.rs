//! Runs `tests/filetests/prune/*.ir` and `tests/filetests/prune-unstructured/*.ir` with a
//! registry of just this crate's passes (the workspace-wide runner in
//! `tests/tests/filetests.rs` runs them too, with every pass).

use std::path::Path;

fn registry() -> pare_pass::Registry {
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_prune::register(&mut reg);
    reg
}

#[test]
fn prune_filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/prune");
    pare_pass::filetest::assert_dir(&registry(), &dir, 7);
}

#[test]
fn prune_unstructured_filetests() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/prune-unstructured");
    pare_pass::filetest::assert_dir(&registry(), &dir, 9);
}
