//! Renderers of a finished [`crate::profile::RunRecord`]. (Being built: issues 4 and 8.)
