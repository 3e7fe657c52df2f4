//! The error type of passes, analyses and the pass manager.

use pare_ir::{Graph, NodeId};
use std::path::PathBuf;

/// Why a pipeline could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pipeline names a pass the registry does not know.
    #[error("unknown pass '{name}'; available passes: {available}")]
    UnknownPass {
        /// The name given.
        name: String,
        /// Comma-separated registered names.
        available: String,
    },
    /// The pipeline text does not parse.
    #[error("pipeline syntax error at column {column}: {message}\n  {pipeline}\n  {caret}")]
    Syntax {
        /// 1-based column.
        column: usize,
        /// What was expected.
        message: String,
        /// The pipeline text.
        pipeline: String,
        /// A `^` under the column.
        caret: String,
    },
    /// A pass's options are unknown or ill-typed.
    #[error("pass '{pass}': {message}")]
    Options {
        /// The pass.
        pass: String,
        /// What is wrong, with the valid options.
        message: String,
    },
    /// A pass refused or failed at a node.
    #[error("pass '{pass}': node '{node}' ({op}): {message}")]
    Node {
        /// The pass.
        pass: String,
        /// Node name (or id when unnamed).
        node: String,
        /// Op name.
        op: String,
        /// What went wrong.
        message: String,
    },
    /// A pass failed.
    #[error("pass '{pass}': {message}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong.
        message: String,
    },
    /// An analysis could not be computed.
    #[error("analysis '{analysis}': {message}")]
    Analysis {
        /// The analysis.
        analysis: String,
        /// What went wrong.
        message: String,
    },
    /// A pass left the graph invalid (caught by verify-each).
    #[error("after pass '{pass}' the graph is invalid: {message}{}", repro_hint(.repro))]
    Invalid {
        /// The pass that broke the graph.
        pass: String,
        /// Verifier or type-inference message.
        message: String,
        /// Reproducer written (input IR + pipeline), if any.
        repro: Option<PathBuf>,
    },
    /// A pass failed; the reproducer was written.
    #[error("{source}{}", repro_hint(.repro))]
    WithRepro {
        /// The failure.
        source: Box<PassError>,
        /// The reproducer file.
        repro: Option<PathBuf>,
    },
    /// Calibration or evaluation data could not be loaded.
    #[error("{path}: {message}")]
    Data {
        /// File or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The interpreter failed (calibration, numeric checks).
    #[error(transparent)]
    Interp(#[from] pare_interp::InterpError),
}

fn repro_hint(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!("\n  reproducer (input IR and pipeline): {}", p.display()),
        None => String::new(),
    }
}

impl PassError {
    /// A pass failure with a message.
    pub fn failed(pass: impl Into<String>, message: impl Into<String>) -> PassError {
        PassError::Failed {
            pass: pass.into(),
            message: message.into(),
        }
    }

    /// A failure at a node, naming it and its op.
    pub fn at_node(
        pass: impl Into<String>,
        g: &Graph,
        node: NodeId,
        message: impl Into<String>,
    ) -> PassError {
        let n = g.node(node);
        PassError::Node {
            pass: pass.into(),
            node: if n.name.is_empty() {
                node.to_string()
            } else {
                n.name.clone()
            },
            op: n.op.name().to_string(),
            message: message.into(),
        }
    }

    /// An analysis failure.
    pub fn analysis(analysis: impl Into<String>, message: impl Into<String>) -> PassError {
        PassError::Analysis {
            analysis: analysis.into(),
            message: message.into(),
        }
    }
}
