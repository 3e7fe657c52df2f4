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
    pare_pass::filetest::assert_dir(&reg, &dir, 6);
}
