//! Exact fusion passes (part of the `canonicalize` pipeline).
//!
//! Each pass recognizes a subgraph that exporters emit for one operation and replaces it by
//! the single ONNX op that defines it, computing the same function up to float rounding:
//!
//! | pass | rewrite |
//! |---|---|
//! | `fold-batchnorm` | BatchNormalization after Conv / ConvTranspose / Gemm / 2-D MatMul → folded weights |
//! | `fuse-gemm` | 2-D MatMul by a constant + bias Add → Gemm |
//! | `fuse-layernorm` | ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul/Add) → LayerNormalization |
//! | `fuse-gelu` | x·0.5·(1 + erf(x/√2)) → Gelu; the tanh approximation → Gelu{approximate=tanh} |
//! | `fuse-attention` | MatMul/scale/mask/Softmax/MatMul → Attention (opset 23, 4-D) |
//!
//! A pattern that does not match exactly is skipped, never approximated; each module's doc
//! block states what it needs and guarantees. The passes work on the top-level graph and,
//! recursively, on If/Loop/Scan subgraphs (each a self-contained graph whose captures are
//! plain inputs); a value read by a subgraph-holding node counts as a reader like any other,
//! so patterns whose intermediates are captured are left alone. Replaced values hand their
//! names to their replacements, so graph output names survive.

mod attention;
mod batchnorm;
mod gelu;
mod gemm;
mod layernorm;
mod util;

pub use attention::FuseAttention;
pub use batchnorm::FoldBatchNorm;
pub use gelu::FuseGelu;
pub use gemm::FuseGemm;
pub use layernorm::FuseLayerNorm;

use pare_pass::Registry;

/// Registers this crate's passes: `fold-batchnorm`, `fuse-gemm`, `fuse-layernorm`,
/// `fuse-gelu`, `fuse-attention`.
pub fn register(reg: &mut Registry) {
    reg.register_default::<FoldBatchNorm>(
        "fold-batchnorm",
        "fold inference BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul weights",
    );
    reg.register_default::<FuseGemm>(
        "fuse-gemm",
        "fuse a 2-D MatMul by a constant and a bias Add into Gemm",
    );
    reg.register_default::<FuseLayerNorm>(
        "fuse-layernorm",
        "fuse the decomposed mean/variance normalization into LayerNormalization",
    );
    reg.register_default::<FuseGelu>(
        "fuse-gelu",
        "fuse the erf and tanh GELU decompositions into Gelu",
    );
    reg.register_default::<FuseAttention>(
        "fuse-attention",
        "fuse MatMul/scale/mask/Softmax/MatMul into ONNX Attention (opset 23, 4-D)",
    );
}
