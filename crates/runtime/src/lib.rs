//! # pare-runtime: the kernels compiled artifacts link against
//!
//! The LLVM backend emits calls into this crate and links it into every artifact as a static
//! library (`crate-type = ["rlib", "staticlib"]`), so at run time it needs nothing but libc, libm,
//! libdl and pthread. It has no dependencies beyond `std` (not even `thiserror`), so a bare
//! `rustc --crate-type staticlib src/lib.rs` builds it for any target CPU. It exposes a safe Rust
//! API and a C ABI ([`ffi`], declared in `include/pare_runtime.h`, exercised from C by
//! `tests/c_header.rs`).
//!
//! ## Quantized GEMM
//!
//! [`qgemm()`] multiplies u8 activations (dynamically quantized per row by
//! [`quantize_rows_u8`]) by i8 weights (pre-packed with [`pack_qb`]) into exact i32 sums,
//! dequantized with bias and activation in an f32 epilogue. Design, exactness argument and layouts in the [`qgemm`](mod@qgemm) module doc.
//!
//! ## SGEMM
//!
//! `C = act(alpha * op(A) * op(B) + beta * C + bias + residual)`, row-major, f32
//! ([`sgemm`], [`sgemm_fused`], [`sgemm_packed`], or [`Gemm`] for every knob). The
//! implementation is the Goto/BLIS scheme (Goto & van de Geijn, "Anatomy of High-Performance
//! Matrix Multiplication", TOMS 2008; Van Zee & van de Geijn, "BLIS", TOMS 2015):
//!
//! ```text
//! for jc in 0..n step NC            B block kc x nc packed once per (jc, pc)  -> L3
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] into 16-column micro-panels
//!     for ic in 0..m step MC        A block mc x kc packed per (jc, pc, ic)   -> L2
//!       pack A[ic.., pc..] into 6-row micro-panels
//!       for jr in 0..nc step 16     one B micro-panel (kc x 16, 16 KiB)       -> L1
//!         for ir in 0..mc step 6    micro-kernel: 6x16 tile of C in 12 ymm registers
//! ```
//!
//! **Blocking** (for these machines: 32 KiB L1d, 1 MiB L2 per core, shared L3): `MR x NR = 6 x
//! 16`; `KC = 256` so a B micro-panel is 16 KiB, half of L1, leaving room for the A micro-panel
//! (6 KiB) streaming through; `MC = 144` so the packed A block is 144 KiB, resident in L2 while
//! every B micro-panel of the block passes over it; `NC = 4080` so the packed B block (4 MiB)
//! lives in L3. `beta` is applied on the first k block only and the epilogue on the last, so
//! every element of C is loaded and stored once per k block.
//!
//! **Micro-kernel** (AVX2 + FMA): per `p`, two 8-wide loads of the B row, six broadcasts of A,
//! twelve FMAs into twelve accumulators; 15 of 16 ymm registers, 12 independent FMA chains (two
//! pipes x latency 4 needs >= 8), loads at 8 per 12 FMAs, under the two-loads-per-cycle limit.
//! It is compiled for 1..=6 rows (const generic) so M edges do no dead work; N edges use masked
//! loads/stores (packing pads with zeros). The epilogue (alpha, beta, bias, residual,
//! relu/clamp/leaky-relu) runs in registers before the single store; sigmoid/tanh/gelu run as a
//! vectorized pass over the just-stored tile while it is in L1. The instruction set is chosen per
//! call ([`Isa::Auto`] uses `is_x86_feature_detected!`); the portable kernel has the same tiling
//! in plain Rust. When a thread's share of C has at most `DIRECT_A_MAX_N` columns, A is read in
//! place rather than packed (each element is used too few times to repay the copy).
//!
//! **Pre-packed weights**: [`pack_b`] / [`PackedB`] store the whole `k x n` matrix in the
//! micro-panel layout (documented on [`PackedB`], independent of the ISA), so a constant weight is
//! packed once, at compile time into the artifact's constant data or at init, and
//! [`sgemm_packed`] skips B packing entirely.
//!
//! **Threads**: the `threads` argument splits C into one rectangle per thread, along N or M in
//! whole micro-tiles, choosing the dimension whose split duplicates less packing (splitting N
//! makes every thread pack the same A rows; splitting M, the same B columns, which costs nothing
//! for pre-packed B). Threads share nothing but read-only inputs, so there is no synchronization
//! beyond the join. They are `std::thread::scope` threads spawned per call; a call uses fewer
//! threads than asked when it has less than ~4 MFLOP per thread, where the spawn cost (tens of
//! microseconds) would dominate. A persistent pool is left to the artifact runtime, which will
//! own the threads for a whole model run.
//!
//! **Errors**: every dimension, leading dimension, buffer length and epilogue parameter is
//! checked before anything is written ([`GemmError`]; in C, a status code). `unsafe` is confined
//! to the kernels (raw pointers into C and the intrinsics) and the C ABI, each block with the
//! argument for its soundness.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod abi;
mod error;
pub mod exe;
pub mod ffi;
mod gemm;
pub mod loader;
pub mod npy;
pub mod ops;
mod pool;
pub mod qgemm;

pub use error::GemmError;
pub use gemm::epilogue::{Activation, Bias, Epilogue, Residual};
pub use gemm::pack::{PackedB, PackedBRef};
pub use gemm::{pack_b, sgemm, sgemm_fused, sgemm_packed, BOperand, Gemm, Isa};
pub use qgemm::{
    pack_qb, pack_qb_f32, qgemm, qgemm_i32, quantize_rows_u8, quantize_weights_per_column,
    PackedQB, PackedQBRef, QGemm, QbFormat, QGEMM_MAX_K,
};
