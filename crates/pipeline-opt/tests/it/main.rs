//! The one integration-test binary of the library: real cargo on generated fixture
//! workspaces, one module per feature.

mod support;

mod affected;
mod bench_compare;
mod cache;
mod cli;
mod config;
mod embed;
mod faults;
mod optimize;
mod orchestrator;
mod parse_props;
mod plan;
mod pool;
mod process;
mod records;
mod report;
mod shard;
mod tidy;
mod workspace;
