//! Performance targets: the required and stretch totals and per-stage targets, and the
//! verdict of a run against them. (Being built: issue 4.)

/// Total and per-stage time limits.
#[derive(Debug, Clone, Default)]
pub struct PerformanceTargets {}
