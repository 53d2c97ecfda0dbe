//! The one integration-test binary of the library: real cargo on generated fixture
//! workspaces, one module per feature.

mod support;

mod bench_compare;
mod plan;
mod workspace;
