//! Output comparison.
