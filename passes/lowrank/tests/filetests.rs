//! Runs `tests/filetests/eora/*.ir` with a registry of this crate's passes plus `quantize`
//! (whose error the EoRA tests compensate); the workspace-wide runner in
//! `tests/tests/filetests.rs` runs them too, with every pass, and the `lowrank` ones.

use std::path::Path;

fn registry() -> pare_pass::Registry {
    let mut reg = pare_pass::Registry::new();
    pare_quantize::register(&mut reg);
    pare_lowrank::register(&mut reg);
    reg
}

#[test]
fn eora_filetests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/filetests/eora");
    pare_pass::filetest::assert_dir(&registry(), &dir, 8);
}
