//! The model ABI end to end, with a hand-written "compiled model" (tests/c/fake_model.c, built
//! against examples/c-api/pare_model_abi.h):
//!
//! - `npy` and `exe::tensor_proto` readers/writers;
//! - the Rust loader on the model built as a shared object (`cc -shared -fPIC`);
//! - the standalone executable: tests/c/fake_main.c + fake_model.c linked against the static
//!   library of this crate, built with a bare `rustc --crate-type staticlib` (as the backend
//!   does), run with .npy, .pb and test_data_set inputs, `--bench`, `--info` and bad inputs;
//! - the C example in examples/c-api (main.c via run.sh) on the shared object.
//!
//! Tests that need a C compiler print a message and pass when `cc` (or `$CC`) is missing.

use pare_runtime::abi::dtype;
use pare_runtime::exe::tensor_proto;
use pare_runtime::loader::{self, Library, LoadError};
use pare_runtime::npy::{self, NpyArray};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_dir() -> PathBuf {
    root().join("../../examples/c-api")
}

fn cc() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Some(cc),
        _ => {
            eprintln!("SKIPPED: no C compiler (`{cc}`); set CC to run this test");
            None
        }
    }
}

fn tmp(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("exe_loader_{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn run_cmd(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Features of `fake_cpu_api`: some this CPU may lack, one unknown name (ignored).
const CPU_FEATURES: &str = "sse2,not_a_real_feature,avx512f,avx512vnni,avx512vpopcntdq,sha";

/// Builds tests/c/fake_model.c as a shared object in `dir`.
fn build_fake_so(cc: &str, dir: &Path) -> PathBuf {
    let so = dir.join("libfake.so");
    run_cmd(
        Command::new(cc)
            .args([
                "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
            ])
            .arg(format!("-DFAKE_CPU_FEATURES=\"{CPU_FEATURES}\""))
            .arg("-I")
            .arg(header_dir())
            .arg(root().join("tests/c/fake_model.c"))
            .arg("-o")
            .arg(&so),
        "cc -shared fake_model.c",
    );
    so
}

fn f32s(a: &NpyArray) -> Vec<f32> {
    a.to_f32_vec().expect("float32 array")
}

// ---------------------------------------------------------------------------------------------
// npy and TensorProto

#[test]
fn npy_roundtrip_every_dtype() {
    let dir = tmp("npy");
    let cases: Vec<(i32, Vec<i64>)> = vec![
        (dtype::F32, vec![2, 3]),
        (dtype::F64, vec![4]),
        (dtype::F16, vec![1, 2, 2]),
        (dtype::I64, vec![]),
        (dtype::I32, vec![0, 5]),
        (dtype::I8, vec![7]),
        (dtype::U8, vec![3, 1]),
        (dtype::BOOL, vec![2]),
    ];
    for (code, shape) in cases {
        let n = npy::num_elements(&shape).unwrap() * dtype::size(code).unwrap();
        let data: Vec<u8> = (0..n)
            .map(|i| {
                if code == dtype::BOOL {
                    (i % 2) as u8
                } else {
                    (i * 7 + 1) as u8
                }
            })
            .collect();
        let a = NpyArray::new(code, shape.clone(), data).unwrap();
        let bytes = npy::to_bytes(&a).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data of {shape:?} is 64-byte aligned");
        assert_eq!(bytes[10 + hlen - 1], b'\n');
        let path = dir.join(format!("a{code}.npy"));
        npy::write(&path, &a).unwrap();
        assert_eq!(
            npy::read(&path).unwrap(),
            a,
            "{}",
            npy::describe(code, &shape)
        );
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".npy"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn npy_bytes(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY".to_vec();
    b.push(version);
    b.push(0);
    if version == 1 {
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn npy_reads_numpy_variants() {
    let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // numpy's own spacing, version 2.0.
    let a = npy::parse(&npy_bytes(
        2,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }          \n",
        &vals,
    ))
    .unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(f32s(&a), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // Fortran order: memory holds columns.
    let a = npy::parse(&npy_bytes(
        1,
        "{\"descr\":\"<f4\",\"fortran_order\":True,\"shape\":(2,3)}\n",
        &vals,
    ))
    .unwrap();
    assert_eq!(f32s(&a), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
    // Big endian.
    let be: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = npy::parse(&npy_bytes(
        1,
        "{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }\n",
        &be,
    ))
    .unwrap();
    assert_eq!(a.to_i64_vec().unwrap(), vec![7, -1]);
    // Scalar.
    let a = npy::parse(&npy_bytes(
        1,
        "{'descr': '<f8', 'fortran_order': False, 'shape': (), }\n",
        &2.5f64.to_le_bytes(),
    ))
    .unwrap();
    assert!(a.shape.is_empty());
    assert_eq!(a.to_f64_vec().unwrap(), vec![2.5]);
    // float16 conversion (1.0, -2.0, 65504, smallest subnormal, inf).
    let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001, 0x7c00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let a = NpyArray::new(dtype::F16, vec![5], halves).unwrap();
    assert_eq!(
        a.to_f64_vec().unwrap(),
        vec![1.0, -2.0, 65504.0, 2f64.powi(-24), f64::INFINITY]
    );
    // Errors.
    let err = |b: &[u8]| npy::parse(b).unwrap_err().to_string();
    assert!(err(b"not an npy file").contains("magic"));
    assert!(err(&npy_bytes(
        1,
        "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n",
        &[0; 8]
    ))
    .contains("unsupported dtype"));
    assert!(err(&npy_bytes(
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
        &vals[..20]
    ))
    .contains("needs 24 data bytes"));
    assert!(NpyArray::new(dtype::F32, vec![2], vec![0; 7]).is_err());
    let e = npy::read("/nonexistent/dir/x.npy").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/dir/x.npy"), "{e}");
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[test]
fn tensor_proto_decoding() {
    // Round trip through raw_data.
    let a = NpyArray::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let (name, b) = tensor_proto::decode(&tensor_proto::encode(Some("x"), &a)).unwrap();
    assert_eq!(name.as_deref(), Some("x"));
    assert_eq!(b, a);
    let s = NpyArray::from_i64(vec![], &[42]).unwrap();
    assert_eq!(
        tensor_proto::decode(&tensor_proto::encode(None, &s)).unwrap(),
        (None, s)
    );

    // Unpacked dims, float_data packed.
    let mut pb = Vec::new();
    for d in [1u64, 2] {
        pb.push(1 << 3); // dims, varint
        varint(&mut pb, d);
    }
    pb.extend_from_slice(&[2 << 3, 1]); // data_type = FLOAT
    pb.push((4 << 3) | 2);
    pb.push(8);
    pb.extend(0.5f32.to_le_bytes());
    pb.extend((-1.5f32).to_le_bytes());
    pb.extend_from_slice(&[(12 << 3) | 2, 2, b'h', b'i']); // doc_string, skipped
    let (name, t) = tensor_proto::decode(&pb).unwrap();
    assert_eq!(name, None);
    assert_eq!((t.dtype, t.shape.clone()), (dtype::F32, vec![1, 2]));
    assert_eq!(f32s(&t), vec![0.5, -1.5]);

    // int8 in unpacked int32_data (negative values are 10-byte varints).
    let mut pb = vec![(1 << 3) | 2, 1, 3, 2 << 3, 3];
    for v in [-1i64, 5, -128] {
        pb.push(5 << 3);
        varint(&mut pb, v as u64);
    }
    let (_, t) = tensor_proto::decode(&pb).unwrap();
    assert_eq!(t.data, vec![0xff, 5, 0x80]);

    // int64_data packed, double_data unpacked.
    let mut pb = vec![(1 << 3) | 2, 1, 2, 2 << 3, 7, (7 << 3) | 2];
    let mut packed = Vec::new();
    varint(&mut packed, 300);
    varint(&mut packed, (-2i64) as u64);
    varint(&mut pb, packed.len() as u64);
    pb.extend(packed);
    assert_eq!(
        tensor_proto::decode(&pb).unwrap().1.to_i64_vec().unwrap(),
        vec![300, -2]
    );
    let mut pb = vec![(1 << 3) | 2, 1, 1, 2 << 3, 11, (10 << 3) | 1];
    pb.extend(3.25f64.to_le_bytes());
    assert_eq!(
        tensor_proto::decode(&pb).unwrap().1.to_f64_vec().unwrap(),
        vec![3.25]
    );

    // Errors: wrong element count, unsupported type, external data, truncation.
    let bad = vec![(1 << 3) | 2, 1, 3, 2 << 3, 1, (4 << 3) | 2, 4, 0, 0, 0, 0];
    assert!(tensor_proto::decode(&bad)
        .unwrap_err()
        .contains("needs 12 bytes"));
    let bad = vec![2 << 3, 8]; // STRING
    assert!(tensor_proto::decode(&bad)
        .unwrap_err()
        .contains("unsupported data_type 8"));
    let bad = vec![2 << 3, 1, 14 << 3, 1];
    assert!(tensor_proto::decode(&bad).unwrap_err().contains("external"));
    let bad = vec![2 << 3, 1, (9 << 3) | 2, 40, 0];
    assert!(tensor_proto::decode(&bad)
        .unwrap_err()
        .contains("truncated"));
}

// ---------------------------------------------------------------------------------------------
// Loader

#[test]
fn cpu_feature_lists() {
    assert!(loader::missing_cpu_features("").is_empty());
    assert!(loader::missing_cpu_features("bogus, -avx512f ,,+nonsense").is_empty());
    if cfg!(target_arch = "x86_64") {
        assert!(loader::missing_cpu_features("sse2,+sse2").is_empty());
        assert_eq!(loader::cpu_has("sse2"), Some(true));
        let avx2 = loader::cpu_has("avx2").unwrap();
        assert_eq!(loader::missing_cpu_features("+avx2").is_empty(), avx2);
    }
}

#[test]
fn loader_info_run_and_errors() {
    let Some(cc) = cc() else { return };
    let dir = tmp("loader");
    let so = build_fake_so(&cc, &dir);

    let lib = Library::open(&so, "fake").unwrap();
    let info = lib.info();
    assert_eq!(info.name, "fake");
    assert_eq!(info.abi_version, 1);
    assert_eq!(info.arena_bytes, 4096);
    assert_eq!(info.target_triple, "x86_64-unknown-linux-gnu");
    assert_eq!(info.cpu_features, "");
    let ins: Vec<_> = info
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.clone(), t.bytes))
        .collect();
    assert_eq!(
        ins,
        vec![
            ("x", dtype::F32, vec![2, 3], 24),
            ("offset", dtype::F32, vec![3], 12)
        ]
    );
    let outs: Vec<_> = info
        .outputs
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.clone(), t.bytes))
        .collect();
    assert_eq!(
        outs,
        vec![
            ("y", dtype::F32, vec![2, 3], 24),
            ("ids/argmax", dtype::I64, vec![2], 16)
        ]
    );

    // run_arrays.
    let mut s = lib.session(2).unwrap();
    let x = NpyArray::from_f32(vec![2, 3], &[1.0, 5.0, 2.0, -1.0, -3.0, 0.5]).unwrap();
    let off = NpyArray::from_f32(vec![3], &[0.0, 10.0, 100.0]).unwrap();
    let y = s.run_arrays(&[x.clone(), off.clone()]).unwrap();
    assert_eq!(f32s(&y[0]), vec![3.0, 21.0, 105.0, -1.0, 5.0, 102.0]);
    assert_eq!(y[1].to_i64_vec().unwrap(), vec![1, 2]);
    assert_eq!(y[1].shape, vec![2]);

    // Raw buffers.
    let mut yb = vec![0u8; 24];
    let mut ib = vec![0u8; 16];
    s.run(&[&x.data, &off.data], &mut [&mut yb, &mut ib])
        .unwrap();
    assert_eq!(yb, y[0].data);

    // Wrong counts and sizes.
    let e = s.run(&[&x.data], &mut [&mut yb, &mut ib]).unwrap_err();
    assert!(
        matches!(
            e,
            LoadError::Count {
                kind: "input",
                expected: 2,
                found: 1
            }
        ),
        "{e}"
    );
    let e = s.run(&[&x.data, &off.data], &mut [&mut yb]).unwrap_err();
    assert!(
        matches!(
            e,
            LoadError::Count {
                kind: "output",
                expected: 2,
                found: 1
            }
        ),
        "{e}"
    );
    let e = s
        .run(&[&x.data[..20], &off.data], &mut [&mut yb, &mut ib])
        .unwrap_err();
    assert!(
        matches!(
            &e,
            LoadError::Buffer {
                kind: "input",
                index: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("'x'") && e.to_string().contains("24 bytes"),
        "{e}"
    );
    let mut short = vec![0u8; 8];
    let e = s
        .run(&[&x.data, &off.data], &mut [&mut yb, &mut short])
        .unwrap_err();
    assert!(e.to_string().contains("output 1 'ids/argmax'"), "{e}");
    // Misaligned f32 input (one of the two offsets is not a multiple of 4).
    let shifted = [0u8; 25];
    let start = usize::from(!(shifted.as_ptr() as usize + 1).is_multiple_of(4));
    let e = s.run(
        &[&shifted[start..start + 24], &off.data],
        &mut [&mut yb, &mut ib],
    );
    assert!(e.unwrap_err().to_string().contains("aligned"));
    // Wrong dtype / shape through run_arrays.
    let e = s.run_arrays(&[off.clone(), off.clone()]).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected float32[2, 3], found float32[3]"),
        "{e}"
    );
    // A failing run.
    let mut bad = x.clone();
    bad.data[..4].copy_from_slice(&(-999f32).to_le_bytes());
    let e = s.run_arrays(&[bad, off.clone()]).unwrap_err();
    assert!(matches!(e, LoadError::Run { status: 2, .. }), "{e}");
    // The session still works afterwards, and a second one coexists.
    let mut s2 = lib.session(0).unwrap();
    assert_eq!(s2.run_arrays(&[x.clone(), off.clone()]).unwrap(), y);
    assert_eq!(s.run_arrays(&[x.clone(), off.clone()]).unwrap(), y);
    // Sessions keep the library alive; sessions are Send.
    drop(lib);
    let h = std::thread::spawn(move || s2.run_arrays(&[x, off]).unwrap());
    assert_eq!(h.join().unwrap(), y);
    drop(s);

    // Load errors.
    let e = Library::open(&so, "fake_badver").unwrap_err();
    assert_eq!(
        e,
        LoadError::AbiVersion {
            found: 99,
            expected: 1
        }
    );
    assert!(e.to_string().contains("version 99"));
    let e = Library::open(&so, "nope").unwrap_err();
    assert!(
        matches!(&e, LoadError::Symbol { symbol, .. } if symbol == "nope_api"),
        "{e}"
    );
    let e = Library::open(dir.join("missing.so"), "fake").unwrap_err();
    assert!(
        matches!(e, LoadError::Open { .. }) && e.to_string().contains("missing.so"),
        "{e}"
    );
    let missing = loader::missing_cpu_features(CPU_FEATURES);
    assert!(!missing.contains(&"not_a_real_feature".to_string()));
    match Library::open(&so, "fake_cpu") {
        Ok(l) => assert!(missing.is_empty(), "{missing:?} missing, yet {l:?} loaded"),
        Err(LoadError::CpuFeatures {
            missing: m,
            required,
        }) => {
            assert_eq!(m, missing);
            assert_eq!(required, CPU_FEATURES);
        }
        Err(e) => panic!("{e}"),
    }
    // A relative path without '/' names a file in the current directory.
    let cwd = std::env::current_dir().unwrap();
    if cwd == root() {
        let e = Library::open("libdefinitely_not_here.so", "fake").unwrap_err();
        assert!(matches!(e, LoadError::Open { .. }));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Standalone executable

struct Built {
    dir: PathBuf,
    exe: PathBuf,
}

/// Builds the static library (once per test process) and the fake model's executable.
fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cc = cc()?;
            let dir = tmp("exe");
            let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
            let lib = dir.join("libpare_runtime.a");
            let t = Instant::now();
            run_cmd(
                Command::new(&rustc)
                    .args(["--crate-type", "staticlib", "--crate-name", "pare_runtime"])
                    .args(["--edition", "2021", "-C", "opt-level=2", "-o"])
                    .arg(&lib)
                    .arg(root().join("src/lib.rs")),
                "rustc --crate-type staticlib",
            );
            eprintln!(
                "staticlib build (rustc -C opt-level=2): {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let exe = dir.join("fake_exe");
            run_cmd(
                Command::new(&cc)
                    .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"])
                    .arg(format!("-DFAKE_CPU_FEATURES=\"{CPU_FEATURES}\""))
                    .arg("-I")
                    .arg(header_dir())
                    .arg(root().join("tests/c/fake_main.c"))
                    .arg(root().join("tests/c/fake_model.c"))
                    .arg(&lib)
                    .args(["-lpthread", "-ldl", "-lm", "-o"])
                    .arg(&exe),
                "cc fake_main.c fake_model.c libpare_runtime.a",
            );
            Some(Built { dir, exe })
        })
        .as_ref()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn exe(b: &Built, args: &[&str], env: &[(&str, &str)]) -> Out {
    let o = Command::new(&b.exe)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the executable");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(o: Out) -> Out {
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn exe_runs_with_every_input_form() {
    let Some(b) = built() else { return };
    let d = b.dir.join("inputs");
    std::fs::create_dir_all(&d).unwrap();
    let x = NpyArray::from_f32(vec![2, 3], &[1.0, 5.0, 2.0, -1.0, -3.0, 0.5]).unwrap();
    let off = NpyArray::from_f32(vec![3], &[0.0, 10.0, 100.0]).unwrap();
    let want_y = vec![3.0, 21.0, 105.0, -1.0, 5.0, 102.0];
    let want_ids = vec![1i64, 2];
    let (xp, offp) = (d.join("x.npy"), d.join("off.npy"));
    npy::write(&xp, &x).unwrap();
    npy::write(&offp, &off).unwrap();
    let check = |out: &Path| {
        let y = npy::read(out.join("y.npy")).unwrap();
        assert_eq!(y.shape, vec![2, 3]);
        assert_eq!(f32s(&y), want_y);
        let ids = npy::read(out.join("ids_argmax.npy")).unwrap();
        assert_eq!(ids.to_i64_vec().unwrap(), want_ids);
        let names: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the two outputs, no temporary files: {names:?}"
        );
    };

    // name=file.npy, in any order.
    let out1 = b.dir.join("out1");
    let o = ok(exe(
        b,
        &[
            "--inputs",
            &format!("offset={}", s(&offp)),
            &format!("x={}", s(&xp)),
            "--out",
            s(&out1),
        ],
        &[],
    ));
    assert!(o.stderr.contains("wrote 2 output(s)"), "{}", o.stderr);
    check(&out1);

    // Positional .npy, --print, --threads, --out=DIR.
    let out2 = b.dir.join("out2");
    let o = ok(exe(
        b,
        &[
            "--threads",
            "3",
            "--inputs",
            s(&xp),
            s(&offp),
            &format!("--out={}", s(&out2)),
            "--print",
        ],
        &[],
    ));
    check(&out2);
    assert!(
        o.stdout
            .contains("y: float32[2, 3] min=-1.000000 max=105.000000"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("ids/argmax: int64[2]"), "{}", o.stdout);
    assert!(o.stdout.contains("ran in "), "{}", o.stdout);

    // .pb files: positional unnamed, and one whose tensor name picks the input.
    let xpb = d.join("x_unnamed.pb");
    std::fs::write(&xpb, tensor_proto::encode(None, &x)).unwrap();
    let offpb = d.join("off_named.pb");
    std::fs::write(&offpb, tensor_proto::encode(Some("offset"), &off)).unwrap();
    let out3 = b.dir.join("out3");
    ok(exe(
        b,
        &["--inputs", s(&offpb), s(&xpb), "--out", s(&out3)],
        &[],
    ));
    check(&out3);

    // A test_data_set directory (input_1 named, input_0 not).
    let ds = d.join("test_data_set_0");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(ds.join("input_0.pb"), tensor_proto::encode(None, &x)).unwrap();
    std::fs::write(
        ds.join("input_1.pb"),
        tensor_proto::encode(Some("offset"), &off),
    )
    .unwrap();
    std::fs::write(ds.join("output_0.pb"), b"ignored").unwrap();
    let out4 = b.dir.join("out4");
    ok(exe(b, &["--inputs", s(&ds), "--out", s(&out4)], &[]));
    check(&out4);

    // Without --out: a summary on stdout.
    let o = ok(exe(b, &["--inputs", s(&xp), s(&offp)], &[]));
    assert!(o.stdout.contains("y: float32[2, 3]"), "{}", o.stdout);
}

#[test]
fn exe_bench_info_help() {
    let Some(b) = built() else { return };
    // --bench on zeros.
    let o = ok(exe(b, &["--bench", "5"], &[]));
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("median_ms=")).count(),
        1,
        "{}",
        o.stdout
    );
    let field = |line: &str, key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
    };
    let l0 = lines[0];
    assert_eq!(l0.split_whitespace().count(), 2, "{l0}");
    let (median, p90) = (field(l0, "median_ms="), field(l0, "p90_ms="));
    assert!(median >= 0.0 && p90 >= median, "{l0}");
    let (min, mean) = (field(lines[1], "min_ms="), field(lines[1], "mean_ms="));
    assert!(min <= median && mean >= min, "{}", lines[1]);
    assert_eq!(field(lines[1], "runs="), 5.0);
    if cfg!(target_os = "linux") {
        let rss = lines
            .iter()
            .find(|l| l.starts_with("peak_rss_mb="))
            .expect("peak_rss_mb line");
        assert!(field(rss, "peak_rss_mb=") > 0.0, "{rss}");
    }

    // --info alone runs nothing.
    let o = ok(exe(b, &["--info"], &[]));
    for want in [
        "name: fake",
        "abi_version: 1",
        "target_triple: x86_64-unknown-linux-gnu",
        "arena_bytes: 4096",
        "0 x: float32[2, 3] (24 bytes)",
        "1 offset: float32[3] (12 bytes)",
        "0 y: float32[2, 3] (24 bytes)",
        "1 ids/argmax: int64[2] (16 bytes)",
    ] {
        assert!(o.stdout.contains(want), "no {want:?} in\n{}", o.stdout);
    }
    assert!(!o.stdout.contains("median_ms"));

    let o = ok(exe(b, &["--help"], &[]));
    assert!(o.stdout.starts_with("usage:"), "{}", o.stdout);
    assert!(o.stdout.contains("--bench N"));
}

#[test]
fn exe_reports_bad_inputs() {
    let Some(b) = built() else { return };
    let d = b.dir.join("bad");
    std::fs::create_dir_all(&d).unwrap();
    let off = d.join("off.npy");
    npy::write(&off, &NpyArray::from_f32(vec![3], &[0.0; 3]).unwrap()).unwrap();
    let transposed = d.join("x_transposed.npy");
    npy::write(
        &transposed,
        &NpyArray::from_f32(vec![3, 2], &[0.0; 6]).unwrap(),
    )
    .unwrap();
    let as_f64 = d.join("x_f64.npy");
    npy::write(
        &as_f64,
        &NpyArray::new(dtype::F64, vec![2, 3], vec![0; 48]).unwrap(),
    )
    .unwrap();
    let good_x = d.join("x.npy");
    npy::write(&good_x, &NpyArray::from_f32(vec![2, 3], &[0.0; 6]).unwrap()).unwrap();
    let failing_x = d.join("x_fail.npy");
    let mut v = [0.0f32; 6];
    v[0] = -999.0;
    npy::write(&failing_x, &NpyArray::from_f32(vec![2, 3], &v).unwrap()).unwrap();

    let fails = |args: &[&str], env: &[(&str, &str)], code: i32, wants: &[&str]| {
        let o = exe(b, args, env);
        assert_eq!(
            o.code, code,
            "{args:?}: stdout {}\nstderr {}",
            o.stdout, o.stderr
        );
        for w in wants {
            assert!(
                o.stderr.contains(w),
                "{args:?}: no {w:?} in stderr:\n{}",
                o.stderr
            );
        }
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    };
    // Wrong shape: names the input, expected vs found, and the file.
    fails(
        &["--inputs", s(&transposed), s(&off)],
        &[],
        1,
        &[
            "input 'x'",
            "expected float32[2, 3]",
            "found float32[3, 2]",
            "x_transposed.npy",
        ],
    );
    fails(
        &[
            "--inputs",
            &format!("x={}", s(&as_f64)),
            &format!("offset={}", s(&off)),
        ],
        &[],
        1,
        &["input 'x'", "dtype", "found float64[2, 3]", "x_f64.npy"],
    );
    fails(
        &["--inputs", s(&good_x)],
        &[],
        1,
        &["no value given for model input 'offset'"],
    );
    fails(
        &["--inputs", s(&good_x), s(&off), s(&off)],
        &[],
        1,
        &["more inputs given"],
    );
    fails(
        &["--inputs", &format!("nope={}", s(&off))],
        &[],
        1,
        &["no input named 'nope'"],
    );
    fails(
        &["--inputs", "/nonexistent/x.npy", s(&off)],
        &[],
        1,
        &["/nonexistent/x.npy"],
    );
    let garbage = d.join("garbage.npy");
    std::fs::write(&garbage, b"hello").unwrap();
    fails(
        &["--inputs", s(&garbage), s(&off)],
        &[],
        1,
        &["garbage.npy", "magic"],
    );
    // A failing run.
    fails(
        &["--inputs", s(&failing_x), s(&off)],
        &[],
        1,
        &["status 2", "index out of range"],
    );
    // Command line.
    fails(&[], &[], 2, &["no inputs given"]);
    fails(
        &["--frobnicate"],
        &[],
        2,
        &["unknown option '--frobnicate'"],
    );
    fails(&["--bench", "zero"], &[], 2, &["--bench"]);
    fails(&["--bench"], &[], 2, &["--bench needs"]);
    fails(&["x.npy"], &[], 2, &["unexpected argument 'x.npy'"]);
    // ABI version and CPU features of the artifact.
    fails(
        &["--bench", "1"],
        &[("FAKE_API", "badver")],
        1,
        &["version 99"],
    );
    let missing = loader::missing_cpu_features(CPU_FEATURES);
    let o = exe(b, &["--bench", "1"], &[("FAKE_API", "cpu")]);
    if missing.is_empty() {
        assert_eq!(o.code, 0, "{}", o.stderr);
    } else {
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains(&missing.join(", ")), "{}", o.stderr);
        // --info still works, and says what is missing.
        let o = ok(exe(b, &["--info"], &[("FAKE_API", "cpu")]));
        assert!(o.stdout.contains("LACKS"), "{}", o.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// The C example

#[test]
fn c_api_example_runs() {
    let Some(cc) = cc() else { return };
    let dir = tmp("c_api");
    let so = build_fake_so(&cc, &dir);
    let out = Command::new("sh")
        .arg(header_dir().join("run.sh"))
        .arg(&so)
        .arg("fake")
        .arg("1")
        .env("CC", &cc)
        .env("TMPDIR", &dir)
        .output()
        .expect("run examples/c-api/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "model fake (x86_64-unknown-linux-gnu",
        "input 0 x: float32[2, 3] (24 bytes)",
        "output 1 ids/argmax: int64[2] (16 bytes)",
        "ran in ",
        "y = [1, 1, 1, 1, 1, 1]",
        "ids/argmax = [0, 0]",
    ] {
        assert!(stdout.contains(want), "no {want:?} in\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
