//! `ParallelOrchestrator`: runs a plan's stage DAG under a concurrency limit, respecting
//! build-directory locks, and emits events. (Being built: issue 4.)

/// Runs a [`crate::plan::Plan`].
#[derive(Debug, Default)]
pub struct ParallelOrchestrator {}
