//! `DependencyCache` and the stage cache. (Being built: issue 5.)

/// Remembers which `Cargo.lock` content was already fetched.
#[derive(Debug, Default)]
pub struct DependencyCache {}
