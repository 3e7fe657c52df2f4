//! The [`Pass`] trait and what a pass reports.

use crate::{Analysis, PassContext, PassError};
use pare_ir::Graph;
use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};

/// A transformation (or check) of a graph.
///
/// A pass edits the graph only through `Graph` methods, which keep use-lists exact. It asks
/// the [`PassContext`] for analyses (cached, computed on first request) and returns a
/// [`PassReport`] saying whether it changed anything, which analyses are still valid, and
/// counters that the pipeline report prints. The manager, not the pass, verifies the graph
/// afterwards, times the pass, prints IR and writes a reproducer when it fails.
///
/// ```
/// use pare_ir::{Graph, Op};
/// use pare_pass::{Pass, PassContext, PassError, PassReport};
///
/// /// Replaces `Identity` nodes by their operand.
/// struct DropIdentity;
///
/// impl Pass for DropIdentity {
///     fn name(&self) -> &str {
///         "drop-identity"
///     }
///     fn run(&mut self, g: &mut Graph, _cx: &mut PassContext) -> Result<PassReport, PassError> {
///         let mut removed = 0;
///         for n in g.node_ids().collect::<Vec<_>>() {
///             if matches!(g.node(n).op, Op::Identity) {
///                 if let (Some(x), Some(&y)) = (g.node(n).input(0), g.node(n).outputs().first()) {
///                     g.replace_all_uses(y, x);
///                     g.remove_node(n);
///                     removed += 1;
///                 }
///             }
///         }
///         Ok(PassReport::counted("removed", removed))
///     }
/// }
/// ```
pub trait Pass: Send {
    /// Stable kebab-case name, as written in pipelines.
    fn name(&self) -> &str;

    /// Runs the pass on `g`.
    fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError>;
}

/// Which analyses survive a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preserved {
    /// All of them (the graph did not change, or not in a way any analysis sees).
    All,
    /// Only these (by type).
    Only(BTreeSet<TypeIdOrd>),
}

/// A `TypeId` with an order, so preserved sets can be `BTreeSet`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TypeIdOrd(pub TypeId);

impl PartialOrd for TypeIdOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TypeIdOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // TypeId is Ord since Rust 1.30 via its u128 hash.
        self.0.cmp(&other.0)
    }
}

impl Preserved {
    /// None preserved.
    pub fn none() -> Preserved {
        Preserved::Only(BTreeSet::new())
    }

    /// True when analysis `t` survives.
    pub fn keeps(&self, t: TypeId) -> bool {
        match self {
            Preserved::All => true,
            Preserved::Only(s) => s.contains(&TypeIdOrd(t)),
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    /// True when the graph changed.
    pub changed: bool,
    /// Analyses still valid afterwards.
    pub preserved: Preserved,
    /// Counters (rewrites applied, nodes removed, ...), summed over repeated runs.
    pub stats: BTreeMap<String, u64>,
    /// Free-form remarks for the report (skipped nodes and why, chosen levels, ...).
    pub notes: Vec<String>,
}

impl PassReport {
    /// Nothing changed; every analysis survives.
    pub fn unchanged() -> PassReport {
        PassReport {
            changed: false,
            preserved: Preserved::All,
            stats: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// The graph changed; no analysis survives (add survivors with [`PassReport::preserve`]).
    pub fn changed() -> PassReport {
        PassReport {
            changed: true,
            preserved: Preserved::none(),
            stats: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Changed iff `n > 0`, with counter `stat = n`.
    pub fn counted(stat: &str, n: u64) -> PassReport {
        let r = if n > 0 {
            PassReport::changed()
        } else {
            PassReport::unchanged()
        };
        r.with_stat(stat, n)
    }

    /// Adds `n` to counter `stat` (builder form).
    pub fn with_stat(mut self, stat: &str, n: u64) -> PassReport {
        self.add_stat(stat, n);
        self
    }

    /// Adds `n` to counter `stat`.
    pub fn add_stat(&mut self, stat: &str, n: u64) {
        *self.stats.entry(stat.to_string()).or_default() += n;
    }

    /// Adds a note.
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// Marks analysis `A` as still valid.
    pub fn preserve<A: Analysis>(mut self) -> PassReport {
        if let Preserved::Only(s) = &mut self.preserved {
            s.insert(TypeIdOrd(TypeId::of::<A>()));
        }
        self
    }

    /// Folds `other` (a later run or a sub-pass) into `self`.
    pub fn merge(&mut self, other: PassReport) {
        self.changed |= other.changed;
        self.preserved = match (
            std::mem::replace(&mut self.preserved, Preserved::All),
            other.preserved,
        ) {
            (Preserved::All, p) | (p, Preserved::All) => p,
            (Preserved::Only(a), Preserved::Only(b)) => {
                Preserved::Only(a.intersection(&b).copied().collect())
            }
        };
        for (k, v) in other.stats {
            *self.stats.entry(k).or_default() += v;
        }
        self.notes.extend(other.notes);
    }
}
