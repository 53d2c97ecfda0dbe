//! `ContainerPool`: service instances started while code compiles and leased to tests.
//! (Being built: issue 6.)

/// A pool of service instances.
#[derive(Debug, Default)]
pub struct ContainerPool {}
