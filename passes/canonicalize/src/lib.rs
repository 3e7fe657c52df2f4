//! Exact simplification passes (part of the `canonicalize` pipeline).
//!
//! | pass | what it does |
//! |---|---|
//! | [`fold-constants`](FoldConstants) | evaluates nodes of constants; bypasses Identity, inference Dropout, no-op Cast/Reshape/Expand/Transpose |
//! | [`fold-shapes`](FoldShapes) | shape computations known at compile time become constants; symbolic dims stay symbolic |
//! | [`fold-if`](FoldIf) | replaces an If with a constant condition by its taken branch, inlined |
//! | [`dce`](Dce) | removes unread nodes and constants (subgraphs included) |
//! | [`cse`](Cse) | merges identical constants and identical nodes |
//! | [`simplify-layout`](SimplifyLayout) | composes Transpose pairs and reshape-like chains, drops no-op ones |
//!
//! Every pass is exact: the transformed graph computes the same function (up to float
//! rounding, and here without any rounding change at all), keeps the names of graph outputs,
//! and leaves the insides of If/Loop/Scan subgraphs alone (only `dce` enters them, and
//! `fold-if` moves the taken branch of a constant-condition If out whole). Each
//! pass's doc block says what it needs and guarantees.

mod cse;
mod dce;
mod fold_constants;
mod fold_if;
mod fold_shapes;
mod layout;
mod util;

pub use cse::Cse;
pub use dce::Dce;
pub use fold_constants::{FoldConstants, FoldConstantsOptions, DEFAULT_MAX_GROWTH};
pub use fold_if::FoldIf;
pub use fold_shapes::FoldShapes;
pub use layout::SimplifyLayout;

use pare_pass::{PassInfo, Registry};

/// Registers this crate's passes: `fold-constants`, `fold-if`, `fold-shapes`, `dce`, `cse`,
/// `simplify-layout`.
pub fn register(reg: &mut Registry) {
    reg.register(
        PassInfo::new(
            "fold-constants",
            "evaluate nodes whose operands are all constants; bypass Identity, inference \
             Dropout and no-op Cast/Reshape/Expand/Transpose",
        )
        .option(
            "max-growth-bytes",
            "int",
            &DEFAULT_MAX_GROWTH.to_string(),
            "skip a fold whose outputs take more than this many bytes beyond the constants it frees",
        )
        .option(
            "keep-compressed",
            "bool",
            "true",
            "never fold a DequantizeLinear or Cast of constants into something larger (quantized and f16 weights stay small)",
        ),
        |opts| {
            Ok(Box::new(FoldConstants::new(
                opts.parse::<FoldConstantsOptions>()?,
            )))
        },
    );
    reg.register_default::<FoldIf>(
        "fold-if",
        "replace an If whose condition is a constant by its taken branch, inlined (captured \
         values rewired, nested Ifs carried along)",
    );
    reg.register_default::<FoldShapes>(
        "fold-shapes",
        "turn shape computations known at compile time (Shape, Size, Gather/Slice of fixed \
         extents, ...) into constants; give Reshape/Expand constant targets with 0/-1/1",
    );
    reg.register_default::<Dce>(
        "dce",
        "remove nodes whose results nobody reads, and unread constants",
    );
    reg.register_default::<Cse>(
        "cse",
        "merge identical constants and nodes with the same op, attributes and operands",
    );
    reg.register_default::<SimplifyLayout>(
        "simplify-layout",
        "compose Transpose pairs and Reshape/Flatten/Squeeze/Unsqueeze chains; drop no-op ones",
    );
}
