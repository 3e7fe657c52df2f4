//! The C ABI as C sees it: builds the crate as a static library with a bare `rustc` (it has no
//! dependencies, so no cargo is needed; `cargo test` does not produce the staticlib itself),
//! compiles tests/c/sgemm.c against include/pare_runtime.h, links the two with only
//! `-lpthread -ldl -lm`, and runs the program.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_program_links_and_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("pare_runtime_c_test_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "staticlib",
            "--crate-name",
            "pare_runtime",
        ])
        .args(["-C", "opt-level=1", "--out-dir"])
        .arg(&dir)
        .arg(root.join("src/lib.rs"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{rustc}`: {e}"));
    assert!(status.success(), "rustc --crate-type staticlib failed");
    let lib = dir.join("libpare_runtime.a");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = dir.join("sgemm");
    let status = Command::new(&cc)
        .arg("-std=c99")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/sgemm.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run C compiler `{cc}`: {e}"));
    assert!(status.success(), "C compile/link failed");
    let run = Command::new(&out).output().expect("run C program");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        run.status.success(),
        "C program failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("ok"));
}
