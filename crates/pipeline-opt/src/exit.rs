//! Exit codes shared by every command, so that CI scripts can tell an error in the input
//! from a failing stage, a missed target or a benchmark regression.

/// Everything passed.
pub const OK: i32 = 0;
/// Bad input or a missing tool; the message names the fix.
pub const ERROR: i32 = 1;
/// The command line could not be parsed (xflags).
pub const USAGE: i32 = 2;
/// A pipeline stage failed.
pub const STAGE_FAILED: i32 = 100;
/// A performance target was missed under `--gate`.
pub const TARGET_MISSED: i32 = 101;
/// `bench-compare` found a regression.
pub const REGRESSION: i32 = 102;
/// `bench-compare` could not decide: the noise floor is above the threshold.
pub const INCONCLUSIVE: i32 = 103;
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: i32 = 130;
