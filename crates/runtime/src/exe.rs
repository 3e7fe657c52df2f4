//! The `main` of standalone model executables (`pare compile --emit exe`).
//!
//! The generated C `main` is one line, `return pare_exe_main(argc, argv, P_api());`, and
//! [`pare_exe_main`] does the rest:
//!
//! ```text
//! MODEL_EXE [--inputs SPEC...] [--out DIR] [--bench N] [--threads T] [--print] [--info] [-h|--help]
//! ```
//!
//! - `--inputs`: as for `pare run`: `name=file.npy`, positional `file.npy` or ONNX `file.pb`
//!   `TensorProto` (in model input order, or by the tensor's name when it names an input), or an
//!   ONNX `test_data_set_N` directory of `input_K.pb` files. Each input's dtype and shape must
//!   match the model's exactly. Without `--inputs`, zeros are used, but only with `--bench` (a
//!   plain run on zeros is almost always a mistake).
//! - `--out DIR`: writes each output to `DIR/<output name>.npy` (name sanitized to
//!   `[A-Za-z0-9._-]`), atomically. Without `--out` (and without `--bench`), outputs are
//!   summarized on stdout as with `--print`.
//! - `--bench N`: one warm-up run, then N timed runs; prints `median_ms=<f> p90_ms=<f>`, then
//!   `min_ms=<f> mean_ms=<f> runs=N`, then `peak_rss_mb=<f>` (VmHWM of /proc/self/status), one
//!   line each.
//! - `--threads T`: passed to `create` (0 = all cores, the default).
//! - `--print`: a summary line per output (`name: dtype[shape] min= max= mean= first=[...]`) and
//!   the run time.
//! - `--info`: the model's name, inputs and outputs (dtype, shape, bytes), arena size, target
//!   triple and CPU features (and whether this CPU has them). Alone, it runs nothing.
//!
//! Before running, the executable checks the ABI version and that this CPU has every feature in
//! the artifact's `cpu_features` ([`crate::loader::missing_cpu_features`]). Errors go to stderr
//! with exit status 1 (2 for a bad command line); a panic is caught and reported as an internal
//! error (status 1), never unwound into C.

use crate::abi::{PareModelApi, ABI_VERSION};
use crate::loader::{self, Library, ModelInfo};
use crate::npy::{self, NpyArray, NpyError};
use std::ffi::{c_char, CStr};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Reading and writing ONNX `TensorProto` messages (`.pb` files of ONNX test data sets), std
/// only.
///
/// Decodes `dims` (1, packed or not), `data_type` (2), `float_data` (4), `int32_data` (5),
/// `int64_data` (7), `name` (8), `raw_data` (9) and `double_data` (10); other fields are
/// skipped, and external data is refused.
pub mod tensor_proto {
    use crate::abi::dtype;
    use crate::npy::{self, NpyArray, NpyError};
    use std::path::Path;

    struct Reader<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Reader<'a> {
        fn varint(&mut self) -> Result<u64, String> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let byte = *self.b.get(self.i).ok_or("truncated varint")?;
                self.i += 1;
                v |= ((byte & 0x7f) as u64) << shift;
                if byte & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err("varint longer than 10 bytes".into())
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            let end = self.i.checked_add(n).filter(|&e| e <= self.b.len());
            let end = end.ok_or("truncated field")?;
            let s = &self.b[self.i..end];
            self.i = end;
            Ok(s)
        }
        fn len_delimited(&mut self) -> Result<&'a [u8], String> {
            let n = self.varint()?;
            self.take(usize::try_from(n).map_err(|_| "length overflow")?)
        }
        fn done(&self) -> bool {
            self.i >= self.b.len()
        }
    }

    /// Appends varints (packed, wire type 2, or one unpacked, wire type 0).
    fn varints(r: &mut Reader<'_>, wire: u64, out: &mut Vec<i64>) -> Result<(), String> {
        match wire {
            0 => out.push(r.varint()? as i64),
            2 => {
                let mut p = Reader {
                    b: r.len_delimited()?,
                    i: 0,
                };
                while !p.done() {
                    out.push(p.varint()? as i64);
                }
            }
            w => return Err(format!("wire type {w} for a varint field")),
        }
        Ok(())
    }

    /// Appends fixed-size little-endian elements of `N` bytes (packed or one unpacked).
    fn fixed<const N: usize>(
        r: &mut Reader<'_>,
        wire: u64,
        unpacked_wire: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if wire == unpacked_wire {
            out.extend_from_slice(r.take(N)?);
        } else if wire == 2 {
            let b = r.len_delimited()?;
            if b.len() % N != 0 {
                return Err(format!(
                    "packed field of {} bytes, not a multiple of {N}",
                    b.len()
                ));
            }
            out.extend_from_slice(b);
        } else {
            return Err(format!("wire type {wire} for a fixed{}-bit field", N * 8));
        }
        Ok(())
    }

    fn skip(r: &mut Reader<'_>, wire: u64) -> Result<(), String> {
        match wire {
            0 => r.varint().map(|_| ()),
            1 => r.take(8).map(|_| ()),
            2 => r.len_delimited().map(|_| ()),
            5 => r.take(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }

    /// Decodes a serialized `TensorProto`: its name (if any) and its value.
    pub fn decode(bytes: &[u8]) -> Result<(Option<String>, NpyArray), String> {
        let mut r = Reader { b: bytes, i: 0 };
        let mut dims: Vec<i64> = Vec::new();
        let mut data_type: Option<i32> = None;
        let mut name = None;
        let mut raw: Option<&[u8]> = None;
        let mut floats: Vec<u8> = Vec::new();
        let mut doubles: Vec<u8> = Vec::new();
        let mut int32s: Vec<i64> = Vec::new();
        let mut int64s: Vec<i64> = Vec::new();
        let mut external = false;
        while !r.done() {
            let key = r.varint()?;
            let (field, wire) = (key >> 3, key & 7);
            match field {
                1 => varints(&mut r, wire, &mut dims)?,
                2 if wire == 0 => data_type = Some(r.varint()? as i32),
                4 => fixed::<4>(&mut r, wire, 5, &mut floats)?,
                5 => varints(&mut r, wire, &mut int32s)?,
                7 => varints(&mut r, wire, &mut int64s)?,
                8 if wire == 2 => {
                    name = Some(String::from_utf8_lossy(r.len_delimited()?).into_owned())
                }
                9 if wire == 2 => raw = Some(r.len_delimited()?),
                10 => fixed::<8>(&mut r, wire, 1, &mut doubles)?,
                13 => {
                    external = true;
                    skip(&mut r, wire)?;
                }
                14 if wire == 0 => external |= r.varint()? == 1,
                _ => skip(&mut r, wire)?,
            }
        }
        let who = name
            .as_deref()
            .map(|n| format!("tensor '{n}': "))
            .unwrap_or_default();
        if external {
            return Err(format!("{who}external data is not supported"));
        }
        let code = data_type.ok_or_else(|| format!("{who}no data_type (not a TensorProto?)"))?;
        let size = dtype::size(code).ok_or_else(|| {
            format!(
                "{who}unsupported data_type {code} (supported: float32, float64, float16, \
                 int64, int32, int8, uint8, bool)"
            )
        })?;
        if let Some(&d) = dims.iter().find(|&&d| d < 0) {
            return Err(format!("{who}negative dimension {d}"));
        }
        let n = npy::num_elements(&dims).ok_or_else(|| format!("{who}shape overflows"))?;
        let data: Vec<u8> = match raw {
            Some(raw) => raw.to_vec(),
            None => match code {
                dtype::F32 => floats,
                dtype::F64 => doubles,
                dtype::I64 => int64s.iter().flat_map(|v| v.to_le_bytes()).collect(),
                dtype::I32 => int32s
                    .iter()
                    .flat_map(|&v| (v as i32).to_le_bytes())
                    .collect(),
                dtype::F16 => int32s
                    .iter()
                    .flat_map(|&v| (v as u16).to_le_bytes())
                    .collect(),
                _ => int32s.iter().map(|&v| v as u8).collect(),
            },
        };
        if data.len() != n * size {
            return Err(format!(
                "{who}{} needs {} bytes of data, the tensor has {}",
                npy::describe(code, &dims),
                n * size,
                data.len()
            ));
        }
        Ok((
            name,
            NpyArray {
                dtype: code,
                shape: dims,
                data,
            },
        ))
    }

    /// Reads a `.pb` file.
    pub fn read(path: &Path) -> Result<(Option<String>, NpyArray), NpyError> {
        let bytes = std::fs::read(path).map_err(|error| NpyError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        decode(&bytes).map_err(|message| NpyError::Format {
            source: path.display().to_string(),
            message,
        })
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Encodes an array as a `TensorProto` (packed `dims`, `data_type`, `name` if given,
    /// `raw_data`).
    pub fn encode(name: Option<&str>, a: &NpyArray) -> Vec<u8> {
        let mut out = Vec::with_capacity(a.data.len() + 64);
        let mut dims = Vec::new();
        for &d in &a.shape {
            put_varint(&mut dims, d as u64);
        }
        if !dims.is_empty() {
            out.push((1 << 3) | 2);
            put_varint(&mut out, dims.len() as u64);
            out.extend_from_slice(&dims);
        }
        out.push(2 << 3);
        put_varint(&mut out, a.dtype as u64);
        if let Some(n) = name {
            out.push((8 << 3) | 2);
            put_varint(&mut out, n.len() as u64);
            out.extend_from_slice(n.as_bytes());
        }
        out.push((9 << 3) | 2);
        put_varint(&mut out, a.data.len() as u64);
        out.extend_from_slice(&a.data);
        out
    }
}

const USAGE: &str = "\
usage: MODEL_EXE [--inputs SPEC...] [--out DIR] [--bench N] [--threads T] [--print] [--info]

Runs the compiled model once on the given inputs.

options:
  --inputs SPEC...  model inputs: name=file.npy, positional file.npy or file.pb (ONNX
                    TensorProto) in model input order, or an ONNX test_data_set_N directory
                    of input_K.pb files; without --inputs, zeros (only with --bench)
  --out DIR         write each output to DIR/<output name>.npy
  --bench N         one warm-up run, then N timed runs; prints median_ms=<f> p90_ms=<f>,
                    then min_ms=<f> mean_ms=<f> runs=N, then peak_rss_mb=<f>
  --threads T       threads (0 = all cores; default 0)
  --print           print a summary of each output and the run time (the default
                    without --out and --bench)
  --info            print the model's inputs, outputs, arena size, target and CPU features
  -h, --help        print this help
";

/// An error to report: message and exit status.
struct Failure {
    code: i32,
    message: String,
}

fn usage_err(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: format!("{} (see --help)", message.into()),
    }
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

impl From<NpyError> for Failure {
    fn from(e: NpyError) -> Self {
        fail(e.to_string())
    }
}

impl From<loader::LoadError> for Failure {
    fn from(e: loader::LoadError) -> Self {
        fail(e.to_string())
    }
}

#[derive(Default)]
struct Opts {
    inputs: Vec<String>,
    out: Option<PathBuf>,
    bench: Option<usize>,
    threads: usize,
    print: bool,
    info: bool,
    help: bool,
}

fn parse_args(args: &[String]) -> Result<Opts, Failure> {
    let mut o = Opts::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |what: &str| -> Result<String, Failure> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            match args.get(i) {
                Some(v) if !v.starts_with("--") => {
                    i += 1;
                    Ok(v.clone())
                }
                _ => Err(usage_err(format!("{flag} needs {what}"))),
            }
        };
        match flag {
            "-h" | "--help" => o.help = true,
            "--print" => o.print = true,
            "--info" => o.info = true,
            "--out" => o.out = Some(PathBuf::from(value("a directory")?)),
            "--bench" => {
                let v = value("a number of runs")?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => o.bench = Some(n),
                    _ => {
                        return Err(usage_err(format!(
                            "--bench needs a positive count, not '{v}'"
                        )))
                    }
                }
            }
            "--threads" => {
                let v = value("a thread count")?;
                o.threads = v
                    .parse()
                    .map_err(|_| usage_err(format!("--threads needs a count, not '{v}'")))?;
            }
            "--inputs" => {
                if let Some(v) = inline {
                    o.inputs.push(v);
                }
                let start = o.inputs.len();
                while let Some(v) = args.get(i).filter(|v| !v.starts_with("--")) {
                    o.inputs.push(v.clone());
                    i += 1;
                }
                if o.inputs.len() == start && !arg.contains('=') {
                    return Err(usage_err("--inputs needs at least one file or directory"));
                }
            }
            other if other.starts_with('-') => {
                return Err(usage_err(format!("unknown option '{other}'")))
            }
            other => {
                return Err(usage_err(format!(
                    "unexpected argument '{other}' (input files go after --inputs)"
                )))
            }
        }
    }
    Ok(o)
}

/// The C `main` of a standalone model executable; returns the process exit status.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings (as C's `main` receives them) and `api` is null
/// or points at the artifact's static [`PareModelApi`], valid for the whole process.
#[no_mangle]
pub unsafe extern "C" fn pare_exe_main(
    argc: i32,
    argv: *const *const c_char,
    api: *const PareModelApi,
) -> i32 {
    let mut args: Vec<String> = Vec::new();
    if !argv.is_null() {
        for k in 0..argc.max(0) as usize {
            // SAFETY: `argv` holds `argc` pointers per this function's contract.
            let p = unsafe { *argv.add(k) };
            if !p.is_null() {
                // SAFETY: each argument is a NUL-terminated string per the contract.
                args.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
            }
        }
    }
    let api_addr = api as usize;
    let code = std::panic::catch_unwind(move || {
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "error: internal error: {info}");
        }));
        let prog = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map_or_else(|| "model".into(), |f| f.to_string_lossy().into_owned());
        let rest = &args[1.min(args.len())..];
        // SAFETY: `api` is null or valid, per this function's contract.
        match unsafe { main_inner(rest, api_addr as *const PareModelApi) } {
            Ok(()) => 0,
            Err(f) => {
                let _ = writeln!(std::io::stderr(), "{prog}: error: {}", f.message);
                f.code
            }
        }
    });
    let _ = std::io::stdout().flush();
    // On a panic, the hook has reported it.
    code.unwrap_or(1)
}

/// # Safety
/// `api` is null or points at a valid [`PareModelApi`], as for [`pare_exe_main`].
unsafe fn main_inner(args: &[String], api: *const PareModelApi) -> Result<(), Failure> {
    let opts = parse_args(args)?;
    if opts.help {
        print!("{USAGE}");
        return Ok(());
    }
    if api.is_null() {
        return Err(fail("the model's _api() returned null"));
    }
    // SAFETY: non-null, hence valid per this function's contract (the generated `main` passes
    // its artifact's static API struct).
    let raw = unsafe { *api };
    if raw.abi_version != ABI_VERSION {
        return Err(loader::LoadError::AbiVersion {
            found: raw.abi_version,
            expected: ABI_VERSION,
        }
        .into());
    }
    // SAFETY: as above, with the layout version checked.
    let info = unsafe { ModelInfo::from_api(&raw) }?;
    if opts.info {
        print_info(&info);
        if opts.inputs.is_empty() && opts.bench.is_none() {
            return Ok(());
        }
    }
    // SAFETY: as above; the API is static data of this executable.
    let lib = unsafe { Library::from_api(api) }?;
    let inputs = if opts.inputs.is_empty() {
        if opts.bench.is_none() && !info.inputs.is_empty() {
            return Err(usage_err(
                "no inputs given: pass --inputs (zeros are used only with --bench or --info)",
            ));
        }
        info.inputs
            .iter()
            .map(|d| NpyArray {
                dtype: d.dtype,
                shape: d.shape.clone(),
                data: vec![0; d.bytes],
            })
            .collect()
    } else {
        load_inputs(&info, &opts.inputs)?
    };
    let mut session = lib.session(opts.threads)?;
    let mut outputs: Vec<Vec<u8>> = info.outputs.iter().map(|d| vec![0u8; d.bytes]).collect();
    let ins: Vec<&[u8]> = inputs.iter().map(|a| a.data.as_slice()).collect();
    let mut run = |outputs: &mut Vec<Vec<u8>>| -> Result<f64, Failure> {
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|b| b.as_mut_slice()).collect();
        let t = Instant::now();
        session.run(&ins, &mut outs)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let first_ms = run(&mut outputs)?;
    if let Some(n) = opts.bench {
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            ms.push(run(&mut outputs)?);
        }
        ms.sort_by(f64::total_cmp);
        let p90 = ms[(n * 9).div_ceil(10).saturating_sub(1).min(n - 1)];
        let mean = ms.iter().sum::<f64>() / n as f64;
        println!("median_ms={:.6} p90_ms={p90:.6}", ms[n / 2]);
        println!("min_ms={:.6} mean_ms={mean:.6} runs={n}", ms[0]);
        match peak_rss_mb() {
            Some(mb) => println!("peak_rss_mb={mb:.1}"),
            None => eprintln!("peak_rss_mb: unavailable (no /proc/self/status VmHWM)"),
        }
    }
    let arrays: Vec<NpyArray> = info
        .outputs
        .iter()
        .zip(outputs)
        .map(|(d, data)| NpyArray {
            dtype: d.dtype,
            shape: d.shape.clone(),
            data,
        })
        .collect();
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let mut used: Vec<String> = Vec::new();
        for (k, (d, a)) in info.outputs.iter().zip(&arrays).enumerate() {
            let mut file = sanitize(&d.name);
            if file.is_empty() || used.contains(&file) {
                file = format!("{file}_{k}");
            }
            used.push(file.clone());
            npy::write(dir.join(format!("{file}.npy")), a)?;
        }
        eprintln!("wrote {} output(s) to {}", arrays.len(), dir.display());
    }
    if opts.print || (opts.out.is_none() && opts.bench.is_none()) {
        for (d, a) in info.outputs.iter().zip(&arrays) {
            println!("{}: {}", d.name, summary(a));
        }
        println!("ran in {first_ms:.3} ms");
    }
    Ok(())
}

fn print_info(info: &ModelInfo) {
    let missing = loader::missing_cpu_features(&info.cpu_features);
    let cpu = if info.cpu_features.trim().is_empty() {
        "(none)".to_string()
    } else if missing.is_empty() {
        format!("{} (this CPU has them)", info.cpu_features)
    } else {
        format!(
            "{} (this CPU LACKS {})",
            info.cpu_features,
            missing.join(", ")
        )
    };
    println!("name: {}", info.name);
    println!("abi_version: {}", info.abi_version);
    println!("target_triple: {}", info.target_triple);
    println!("cpu_features: {cpu}");
    println!(
        "arena_bytes: {} ({:.2} MiB)",
        info.arena_bytes,
        info.arena_bytes as f64 / (1 << 20) as f64
    );
    for (kind, list) in [("inputs", &info.inputs), ("outputs", &info.outputs)] {
        println!("{kind}: {}", list.len());
        for (k, d) in list.iter().enumerate() {
            println!("  {k} {}: {} ({} bytes)", d.name, d.describe(), d.bytes);
        }
    }
}

/// `[A-Za-z0-9._-]` kept, anything else `_` (as `pare run` names its output files).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn summary(a: &NpyArray) -> String {
    let head = match a.to_f64_vec() {
        Some(v) if !v.is_empty() => {
            let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let first: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
            format!(
                " min={min:.6} max={max:.6} mean={mean:.6} first=[{}]",
                first.join(", ")
            )
        }
        _ => String::new(),
    };
    format!("{}{head}", npy::describe(a.dtype, &a.shape))
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// One `--inputs` argument: `name=path` (unless the whole argument names a file) or a path.
fn split_spec(spec: &str) -> (Option<&str>, &Path) {
    match spec.split_once('=') {
        Some((name, path)) if !name.is_empty() && !Path::new(spec).exists() => {
            (Some(name), Path::new(path))
        }
        _ => (None, Path::new(spec)),
    }
}

/// Reads a `.npy` or `.pb` file (by content: `.npy` files start with their magic string).
fn read_tensor(path: &Path) -> Result<(Option<String>, NpyArray), Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    if npy::is_npy(&bytes) {
        let a = npy::parse(&bytes).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        return Ok((None, a));
    }
    if path.extension().is_some_and(|e| e == "npy") {
        return Err(fail(format!(
            "{}: not a .npy file (bad magic)",
            path.display()
        )));
    }
    tensor_proto::decode(&bytes).map_err(|e| {
        fail(format!(
            "{}: not a .npy file nor an ONNX TensorProto: {e}",
            path.display()
        ))
    })
}

/// The `input_K.pb` files of a test_data_set directory, in K order.
fn data_set_files(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read {}: {e}", dir.display())))?;
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for e in rd {
        let p = e
            .map_err(|e| fail(format!("cannot read {}: {e}", dir.display())))?
            .path();
        let k = p
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_prefix("input_"))
            .and_then(|s| s.strip_suffix(".pb"))
            .and_then(|s| s.parse::<usize>().ok());
        if let Some(k) = k {
            files.push((k, p));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Resolves `--inputs` to one array per model input, in model order, each checked against its
/// descriptor.
fn load_inputs(info: &ModelInfo, specs: &[String]) -> Result<Vec<NpyArray>, Failure> {
    let names: Vec<&str> = info.inputs.iter().map(|d| d.name.as_str()).collect();
    let mut slots: Vec<Option<(NpyArray, String)>> = vec![None; names.len()];
    let mut next = 0usize;
    let mut place = |name: Option<String>, a: NpyArray, origin: String| -> Result<(), Failure> {
        let idx = match name {
            Some(n) => names.iter().position(|x| *x == n).ok_or_else(|| {
                fail(format!(
                    "{origin}: the model has no input named '{n}' (inputs: {})",
                    names.join(", ")
                ))
            })?,
            None => {
                while next < slots.len() && slots[next].is_some() {
                    next += 1;
                }
                if next >= slots.len() {
                    return Err(fail(format!(
                        "{origin}: more inputs given than the model has ({}: {})",
                        names.len(),
                        names.join(", ")
                    )));
                }
                next
            }
        };
        if slots[idx].is_some() {
            return Err(fail(format!(
                "{origin}: input '{}' given twice",
                names[idx]
            )));
        }
        slots[idx] = Some((a, origin));
        Ok(())
    };
    for spec in specs {
        let (name, path) = split_spec(spec);
        if path.is_dir() {
            let files = data_set_files(path)?;
            if files.is_empty() {
                return Err(fail(format!(
                    "{}: no input_K.pb files in this directory",
                    path.display()
                )));
            }
            for f in files {
                let (pb_name, a) = read_tensor(&f)?;
                let n = pb_name.filter(|n| names.contains(&n.as_str()));
                place(n, a, f.display().to_string())?;
            }
        } else {
            let (pb_name, a) = read_tensor(path)?;
            let n = name
                .map(str::to_string)
                .or(pb_name.filter(|n| names.contains(&n.as_str())));
            place(n, a, path.display().to_string())?;
        }
    }
    let mut out = Vec::with_capacity(slots.len());
    for (slot, d) in slots.into_iter().zip(&info.inputs) {
        let (a, origin) = slot.ok_or_else(|| {
            fail(format!(
                "no value given for model input '{}' ({}; inputs: {})",
                d.name,
                d.describe(),
                names.join(", ")
            ))
        })?;
        if a.dtype != d.dtype || a.shape != d.shape {
            let what = if a.dtype != d.dtype { "dtype" } else { "shape" };
            return Err(fail(format!(
                "input '{}': wrong {what}: expected {}, found {} in {origin}",
                d.name,
                d.describe(),
                npy::describe(a.dtype, &a.shape)
            )));
        }
        debug_assert_eq!(a.data.len(), d.bytes);
        out.push(a);
    }
    Ok(out)
}
