//! Loading and running a compiled model from Rust.
//!
//! [`Library::open`] `dlopen`s a model shared object (`pare compile --emit so`), looks up
//! `<prefix>_api`, checks the ABI version and that this CPU has the instruction set extensions
//! the artifact was compiled for, and copies the descriptors into a [`ModelInfo`].
//! [`Library::session`] creates a context ([`Session`]), which runs inferences on caller buffers
//! ([`Session::run`]: raw bytes, checked against the descriptors) or on [`NpyArray`]s
//! ([`Session::run_arrays`]: dtype and shape checked, outputs allocated).
//!
//! [`Library::from_api`] wraps an API that is already linked into the process (the standalone
//! executable's `main`, [`crate::exe`], uses it).
//!
//! ```no_run
//! use pare_runtime::loader::Library;
//! use pare_runtime::npy::NpyArray;
//!
//! let lib = Library::open("./libmodel.so", "pare_model")?;
//! let mut session = lib.session(0)?;
//! let inputs: Vec<NpyArray> = lib
//!     .info()
//!     .inputs
//!     .iter()
//!     .map(|t| NpyArray::zeros(t.dtype, t.shape.clone()).unwrap())
//!     .collect();
//! let outputs = session.run_arrays(&inputs)?;
//! println!("{}: {:?}", lib.info().outputs[0].name, outputs[0].shape);
//! # Ok::<(), pare_runtime::loader::LoadError>(())
//! ```
//!
//! The shared object is opened with `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE`: every artifact
//! carries its own copy of this runtime, so its symbols stay local, and it is never unmapped,
//! because the runtime's worker threads (created on first use and never joined) keep running
//! its code after the last [`Library`] is dropped.

use crate::abi::{self, PareModelApi, PareTensorInfo, ABI_VERSION};
use crate::npy::{self, NpyArray};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlclose(handle: *mut c_void) -> c_int;
    fn dlerror() -> *mut c_char;
}

const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;
#[cfg(target_vendor = "apple")]
const RTLD_NODELETE: c_int = 0x80;
#[cfg(not(target_vendor = "apple"))]
const RTLD_NODELETE: c_int = 0x1000;

/// Why a model could not be loaded, created or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `dlopen` failed.
    Open {
        /// The shared object.
        path: PathBuf,
        /// `dlerror()`'s text.
        message: String,
    },
    /// `<prefix>_api` is not exported (wrong prefix?).
    Symbol {
        /// The symbol looked up.
        symbol: String,
        /// `dlerror()`'s text.
        message: String,
    },
    /// `<prefix>_api()` returned null.
    NullApi,
    /// The artifact was generated for another version of the ABI.
    AbiVersion {
        /// The artifact's version.
        found: u32,
        /// This runtime's [`ABI_VERSION`].
        expected: u32,
    },
    /// This CPU lacks instruction set extensions the artifact was compiled for.
    CpuFeatures {
        /// The features that are missing.
        missing: Vec<String>,
        /// The artifact's whole feature list.
        required: String,
    },
    /// The artifact's descriptors are inconsistent (a generator bug).
    BadDescriptor(String),
    /// `create` returned null (out of memory).
    Create {
        /// The arena size it tried to allocate.
        arena_bytes: u64,
    },
    /// Wrong number of input or output buffers.
    Count {
        /// `"input"` or `"output"`.
        kind: &'static str,
        /// What the model has.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// A buffer whose size, dtype or shape does not match its descriptor, or which is not
    /// aligned for its element type.
    Buffer {
        /// `"input"` or `"output"`.
        kind: &'static str,
        /// Its position.
        index: usize,
        /// Its ONNX name.
        name: String,
        /// What the descriptor says.
        expected: String,
        /// What was given.
        found: String,
    },
    /// `run` returned a non-zero status.
    Run {
        /// The status ([`crate::ops`] `STATUS_*`).
        status: i32,
        /// Its text.
        message: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open { path, message } => {
                write!(f, "cannot load {}: {message}", path.display())
            }
            LoadError::Symbol { symbol, message } => write!(
                f,
                "the library does not export `{symbol}` (wrong --prefix?): {message}"
            ),
            LoadError::NullApi => write!(f, "the model's _api() function returned null"),
            LoadError::AbiVersion { found, expected } => write!(
                f,
                "the model was compiled for model ABI version {found}, this runtime supports \
                 version {expected}; recompile it with a matching pare"
            ),
            LoadError::CpuFeatures { missing, required } => write!(
                f,
                "this CPU lacks {} which the model was compiled for (it needs: {required}); \
                 recompile it for this machine (e.g. --target-cpu native or a generic CPU)",
                missing.join(", ")
            ),
            LoadError::BadDescriptor(m) => write!(f, "invalid model descriptor: {m}"),
            LoadError::Create { arena_bytes } => write!(
                f,
                "cannot create a model context (out of memory? the arena needs {arena_bytes} \
                 bytes)"
            ),
            LoadError::Count {
                kind,
                expected,
                found,
            } => write!(f, "the model has {expected} {kind}(s), {found} given"),
            LoadError::Buffer {
                kind,
                index,
                name,
                expected,
                found,
            } => write!(
                f,
                "{kind} {index} '{name}': expected {expected}, found {found}"
            ),
            LoadError::Run { status, message } => {
                write!(f, "the model run failed with status {status}: {message}")
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// One input or output of a model, copied out of its [`PareTensorInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// ONNX value name.
    pub name: String,
    /// ONNX dtype code ([`crate::abi::dtype`]).
    pub dtype: i32,
    /// Static shape.
    pub shape: Vec<i64>,
    /// Size of the dense buffer in bytes.
    pub bytes: usize,
}

impl TensorDesc {
    /// `dtype[shape]`, e.g. `float32[1, 3, 224, 224]`.
    pub fn describe(&self) -> String {
        npy::describe(self.dtype, &self.shape)
    }
}

/// Everything the API struct describes, as owned Rust values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Inputs, in order.
    pub inputs: Vec<TensorDesc>,
    /// Outputs, in order.
    pub outputs: Vec<TensorDesc>,
    /// Bytes of the activation arena one context allocates.
    pub arena_bytes: u64,
    /// LLVM target triple the artifact was compiled for.
    pub target_triple: String,
    /// Comma-separated CPU features the code assumes.
    pub cpu_features: String,
    /// The artifact's ABI version.
    pub abi_version: u32,
}

/// Reads a NUL-terminated string (null reads as empty).
///
/// # Safety
/// `p` is null or points at a NUL-terminated string.
unsafe fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Copies `n` descriptors.
///
/// # Safety
/// `p` points at `n` valid descriptors (or `n == 0`).
unsafe fn descs(
    p: *const PareTensorInfo,
    n: u32,
    kind: &str,
) -> Result<Vec<TensorDesc>, LoadError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(LoadError::BadDescriptor(format!(
            "{n} {kind}s but a null array"
        )));
    }
    // SAFETY: `p` points at `n` descriptors per this function's contract.
    let infos = unsafe { std::slice::from_raw_parts(p, n as usize) };
    let mut out = Vec::with_capacity(infos.len());
    for (i, t) in infos.iter().enumerate() {
        // SAFETY: descriptor names are NUL-terminated strings per the ABI.
        let name = unsafe { c_str(t.name) };
        if t.rank < 0 || (t.rank > 0 && t.shape.is_null()) {
            return Err(LoadError::BadDescriptor(format!(
                "{kind} {i} '{name}': rank {} with {} shape",
                t.rank,
                if t.shape.is_null() { "a null" } else { "a" }
            )));
        }
        let shape = if t.rank == 0 {
            Vec::new()
        } else {
            // SAFETY: `shape` points at `rank` dimensions per the ABI (checked non-null above).
            unsafe { std::slice::from_raw_parts(t.shape, t.rank as usize) }.to_vec()
        };
        if let Some(size) = abi::dtype::size(t.dtype) {
            let expected = npy::num_elements(&shape).and_then(|n| n.checked_mul(size));
            if expected != Some(t.bytes) {
                return Err(LoadError::BadDescriptor(format!(
                    "{kind} {i} '{name}': {} but {} bytes",
                    npy::describe(t.dtype, &shape),
                    t.bytes
                )));
            }
        }
        out.push(TensorDesc {
            name,
            dtype: t.dtype,
            shape,
            bytes: t.bytes,
        });
    }
    Ok(out)
}

impl ModelInfo {
    /// Copies the descriptors of an API struct (does not check the version or the CPU).
    ///
    /// # Safety
    /// Every pointer in `api` is valid as the ABI ([`crate::abi`]) describes.
    pub unsafe fn from_api(api: &PareModelApi) -> Result<ModelInfo, LoadError> {
        // SAFETY (all four calls): the pointers are valid per this function's contract.
        let inputs = unsafe { descs(api.inputs, api.num_inputs, "input") }?;
        // SAFETY: as above.
        let outputs = unsafe { descs(api.outputs, api.num_outputs, "output") }?;
        Ok(ModelInfo {
            // SAFETY: as above.
            name: unsafe { c_str(api.name) },
            inputs,
            outputs,
            arena_bytes: api.arena_bytes,
            // SAFETY: as above.
            target_triple: unsafe { c_str(api.target_triple) },
            // SAFETY: as above.
            cpu_features: unsafe { c_str(api.cpu_features) },
            abi_version: api.abi_version,
        })
    }
}

/// The features of a comma-separated list (`avx2,fma`, `+avx2,+fma`, ...) that this CPU does
/// not have. Names this function does not know, and `-feature` entries, are ignored.
pub fn missing_cpu_features(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty() && !f.starts_with('-'))
        .map(|f| f.trim_start_matches('+'))
        .filter(|f| cpu_has(f) == Some(false))
        .map(str::to_string)
        .collect()
}

/// Whether this CPU has a feature: Some(bool) for a known name, None for an unknown one.
#[allow(unreachable_code)]
pub fn cpu_has(feature: &str) -> Option<bool> {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        use std::arch::is_x86_feature_detected as d;
        return Some(match feature {
            "sse" => d!("sse"),
            "sse2" => d!("sse2"),
            "sse3" => d!("sse3"),
            "ssse3" => d!("ssse3"),
            "sse4.1" | "sse4_1" | "sse41" => d!("sse4.1"),
            "sse4.2" | "sse4_2" | "sse42" => d!("sse4.2"),
            "popcnt" => d!("popcnt"),
            "avx" => d!("avx"),
            "avx2" => d!("avx2"),
            "fma" => d!("fma"),
            "f16c" => d!("f16c"),
            "bmi" | "bmi1" => d!("bmi1"),
            "bmi2" => d!("bmi2"),
            "lzcnt" => d!("lzcnt"),
            "movbe" => d!("movbe"),
            "pclmul" | "pclmulqdq" => d!("pclmulqdq"),
            "aes" => d!("aes"),
            "sha" => d!("sha"),
            "adx" => d!("adx"),
            "xsave" => d!("xsave"),
            "rdrand" | "rdrnd" => d!("rdrand"),
            "rdseed" => d!("rdseed"),
            "cx16" | "cmpxchg16b" => d!("cmpxchg16b"),
            "avx512f" => d!("avx512f"),
            "avx512cd" => d!("avx512cd"),
            "avx512bw" => d!("avx512bw"),
            "avx512dq" => d!("avx512dq"),
            "avx512vl" => d!("avx512vl"),
            "avx512ifma" => d!("avx512ifma"),
            "avx512vbmi" => d!("avx512vbmi"),
            "avx512vnni" => d!("avx512vnni"),
            "avx512vpopcntdq" => d!("avx512vpopcntdq"),
            _ => return None,
        });
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as d;
        return Some(match feature {
            "neon" => d!("neon"),
            "fp16" | "fullfp16" => d!("fp16"),
            "dotprod" => d!("dotprod"),
            "i8mm" => d!("i8mm"),
            "bf16" => d!("bf16"),
            "sve" => d!("sve"),
            "sve2" => d!("sve2"),
            "crc" => d!("crc"),
            "aes" => d!("aes"),
            "sha2" => d!("sha2"),
            "lse" => d!("lse"),
            _ => return None,
        });
    }
    let _ = feature;
    None
}

/// Checks an API's version and the CPU.
fn check_api(api: &PareModelApi, info: &ModelInfo) -> Result<(), LoadError> {
    if api.abi_version != ABI_VERSION {
        return Err(LoadError::AbiVersion {
            found: api.abi_version,
            expected: ABI_VERSION,
        });
    }
    let missing = missing_cpu_features(&info.cpu_features);
    if !missing.is_empty() {
        return Err(LoadError::CpuFeatures {
            missing,
            required: info.cpu_features.clone(),
        });
    }
    Ok(())
}

struct Inner {
    /// The `dlopen` handle, or null for an API linked into the process.
    handle: *mut c_void,
    api: PareModelApi,
    info: ModelInfo,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            // SAFETY: `handle` came from a successful `dlopen` and is closed once, here. With
            // RTLD_NODELETE the object stays mapped, so nothing that still runs its code breaks.
            unsafe { dlclose(self.handle) };
        }
    }
}

// SAFETY: the API struct and its descriptors are immutable static data of the artifact; the
// handle is only passed to `dlclose` once, on drop. The ABI allows creating and destroying
// contexts from any thread (each context is used from one thread at a time, which `Session`'s
// `&mut self` enforces).
unsafe impl Send for Inner {}
// SAFETY: as above; `&Inner` gives access to immutable data and to `create` only.
unsafe impl Sync for Inner {}

/// A loaded model (a shared object, or an API linked into the process). Cheap to clone.
#[derive(Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("info", &self.inner.info)
            .finish_non_exhaustive()
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated thread-local string, read at once.
    let p = unsafe { dlerror() };
    if p.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl Library {
    /// Loads a model shared object and looks up `<prefix>_api` (`pare_model` unless the model
    /// was compiled with another prefix). A path without a `/` that names an existing file is
    /// opened relative to the current directory (not searched for on the library path).
    pub fn open(path: impl AsRef<Path>, prefix: &str) -> Result<Library, LoadError> {
        let path = path.as_ref();
        let open_err = |message: String| LoadError::Open {
            path: path.to_path_buf(),
            message,
        };
        let mut p = path.as_os_str().to_os_string();
        if !p.to_string_lossy().contains('/') && path.is_file() {
            let mut q = std::ffi::OsString::from("./");
            q.push(&p);
            p = q;
        }
        let c_path = CString::new(p.to_string_lossy().into_owned())
            .map_err(|_| open_err("the path contains a NUL byte".into()))?;
        // SAFETY: `c_path` is a valid NUL-terminated string; loading runs the object's
        // initializers, which is what loading a model means.
        let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) };
        if handle.is_null() {
            return Err(open_err(dl_error()));
        }
        // From here every error path closes the handle.
        let symbol = format!("{prefix}_api");
        let close = |e: LoadError| {
            // SAFETY: `handle` is a live handle from `dlopen`, closed once on this error path.
            unsafe { dlclose(handle) };
            e
        };
        let c_sym = CString::new(symbol.clone()).map_err(|_| {
            close(LoadError::Symbol {
                symbol: symbol.clone(),
                message: "the prefix contains a NUL byte".into(),
            })
        })?;
        // SAFETY: `handle` is live and `c_sym` NUL-terminated.
        let f = unsafe { dlsym(handle, c_sym.as_ptr()) };
        if f.is_null() {
            let message = dl_error();
            return Err(close(LoadError::Symbol { symbol, message }));
        }
        // SAFETY: `<prefix>_api` has the signature `const PareModelApi *(void)` per the ABI.
        let api_fn: unsafe extern "C" fn() -> *const PareModelApi =
            unsafe { std::mem::transmute(f) };
        // SAFETY: calling the artifact's API accessor, which takes no arguments.
        let api = unsafe { api_fn() };
        if api.is_null() {
            return Err(close(LoadError::NullApi));
        }
        // SAFETY: non-null; points at the artifact's static API struct, valid while the handle
        // is open (forever, with RTLD_NODELETE).
        let lib = unsafe { Self::from_raw(api, handle) };
        lib.map_err(close)
    }

    /// Wraps an API linked into this process (checks the version and the CPU).
    ///
    /// # Safety
    /// `api` points at a [`PareModelApi`] whose pointers are valid as the ABI describes, for as
    /// long as the returned `Library` or any of its sessions is alive.
    pub unsafe fn from_api(api: *const PareModelApi) -> Result<Library, LoadError> {
        if api.is_null() {
            return Err(LoadError::NullApi);
        }
        // SAFETY: per this function's contract.
        unsafe { Self::from_raw(api, std::ptr::null_mut()) }
    }

    /// # Safety
    /// `api` is non-null and valid as the ABI describes, while `handle` (if any) is open.
    /// On error, the caller still owns `handle`.
    unsafe fn from_raw(
        api: *const PareModelApi,
        handle: *mut c_void,
    ) -> Result<Library, LoadError> {
        // SAFETY: per this function's contract.
        let api = unsafe { *api };
        if api.abi_version != ABI_VERSION {
            // Do not read descriptors laid out for another ABI.
            return Err(LoadError::AbiVersion {
                found: api.abi_version,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: per this function's contract, with the version checked.
        let info = unsafe { ModelInfo::from_api(&api) }?;
        check_api(&api, &info)?;
        Ok(Library {
            inner: Arc::new(Inner { handle, api, info }),
        })
    }

    /// The model's descriptors.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Creates a context (`threads`: 0 = all cores).
    pub fn session(&self, threads: usize) -> Result<Session, LoadError> {
        let threads = i32::try_from(threads).unwrap_or(i32::MAX);
        // SAFETY: `create` is the artifact's function with the ABI's signature.
        let ctx = unsafe { (self.inner.api.create)(threads) };
        if ctx.is_null() {
            return Err(LoadError::Create {
                arena_bytes: self.inner.info.arena_bytes,
            });
        }
        Ok(Session {
            inner: self.inner.clone(),
            ctx,
            in_ptrs: Vec::with_capacity(self.inner.info.inputs.len()),
            out_ptrs: Vec::with_capacity(self.inner.info.outputs.len()),
        })
    }
}

/// One model context (its activation arena and threads); runs one inference at a time.
pub struct Session {
    inner: Arc<Inner>,
    ctx: *mut c_void,
    in_ptrs: Vec<*const c_void>,
    out_ptrs: Vec<*mut c_void>,
}

// SAFETY: the ABI allows a context to be used from any thread, one at a time; every method that
// touches it takes `&mut self`.
unsafe impl Send for Session {}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.inner.info.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from this API's `create` and is destroyed once, here.
        unsafe { (self.inner.api.destroy)(self.ctx) };
    }
}

fn check_buffer(
    kind: &'static str,
    index: usize,
    d: &TensorDesc,
    len: usize,
    addr: usize,
) -> Result<(), LoadError> {
    let err = |expected: String, found: String| LoadError::Buffer {
        kind,
        index,
        name: d.name.clone(),
        expected,
        found,
    };
    if len != d.bytes {
        return Err(err(
            format!("{} bytes ({})", d.bytes, d.describe()),
            format!("{len} bytes"),
        ));
    }
    let align = abi::dtype::size(d.dtype).unwrap_or(1);
    // Element sizes are powers of two.
    if len > 0 && addr & (align - 1) != 0 {
        return Err(err(
            format!("a buffer aligned to {align} bytes"),
            format!("address {addr:#x}"),
        ));
    }
    Ok(())
}

impl Session {
    /// The model's descriptors.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Runs one inference: `inputs[i]` and `outputs[i]` are dense buffers of exactly the
    /// descriptor's `bytes`, aligned for the element type.
    pub fn run(&mut self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) -> Result<(), LoadError> {
        let info = &self.inner.info;
        if inputs.len() != info.inputs.len() {
            return Err(LoadError::Count {
                kind: "input",
                expected: info.inputs.len(),
                found: inputs.len(),
            });
        }
        if outputs.len() != info.outputs.len() {
            return Err(LoadError::Count {
                kind: "output",
                expected: info.outputs.len(),
                found: outputs.len(),
            });
        }
        for (i, (b, d)) in inputs.iter().zip(&info.inputs).enumerate() {
            check_buffer("input", i, d, b.len(), b.as_ptr() as usize)?;
        }
        for (i, (b, d)) in outputs.iter().zip(&info.outputs).enumerate() {
            check_buffer("output", i, d, b.len(), b.as_ptr() as usize)?;
        }
        self.in_ptrs.clear();
        self.in_ptrs
            .extend(inputs.iter().map(|b| b.as_ptr() as *const c_void));
        self.out_ptrs.clear();
        self.out_ptrs
            .extend(outputs.iter_mut().map(|b| b.as_mut_ptr() as *mut c_void));
        // SAFETY: `ctx` is a live context of this API, used by one thread (`&mut self`); every
        // pointer addresses a buffer of the descriptor's size and alignment (checked above),
        // the inputs borrowed shared and the outputs exclusively for the duration of the call.
        let status = unsafe {
            (self.inner.api.run)(self.ctx, self.in_ptrs.as_ptr(), self.out_ptrs.as_ptr())
        };
        if status != 0 {
            return Err(LoadError::Run {
                status,
                message: crate::ops::status_message(status),
            });
        }
        Ok(())
    }

    /// Runs one inference on arrays (dtype and shape checked against the descriptors) and
    /// returns freshly allocated outputs.
    pub fn run_arrays(&mut self, inputs: &[NpyArray]) -> Result<Vec<NpyArray>, LoadError> {
        let info = &self.inner.info;
        if inputs.len() != info.inputs.len() {
            return Err(LoadError::Count {
                kind: "input",
                expected: info.inputs.len(),
                found: inputs.len(),
            });
        }
        for (i, (a, d)) in inputs.iter().zip(&info.inputs).enumerate() {
            if a.dtype != d.dtype || a.shape != d.shape {
                return Err(LoadError::Buffer {
                    kind: "input",
                    index: i,
                    name: d.name.clone(),
                    expected: d.describe(),
                    found: npy::describe(a.dtype, &a.shape),
                });
            }
        }
        let mut outs: Vec<NpyArray> = info
            .outputs
            .iter()
            .map(|d| NpyArray {
                dtype: d.dtype,
                shape: d.shape.clone(),
                data: vec![0; d.bytes],
            })
            .collect();
        let ins: Vec<&[u8]> = inputs.iter().map(|a| a.data.as_slice()).collect();
        let mut out_bufs: Vec<&mut [u8]> = outs.iter_mut().map(|a| a.data.as_mut_slice()).collect();
        self.run(&ins, &mut out_bufs)?;
        Ok(outs)
    }
}
