//! Runs `tests/filetests/quantize/*.ir` with a registry of just this crate's passes (the
//! workspace-wide runner in `tests/tests/filetests.rs` runs them too, with every pass).

use std::path::Path;

#[test]
fn quantize_filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/quantize");
    let mut reg = pare_pass::Registry::new();
    pare_canonicalize::register(&mut reg);
    pare_quantize::register(&mut reg);
    pare_pass::filetest::assert_dir(&reg, &dir, 22);
}
