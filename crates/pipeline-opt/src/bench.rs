//! `bench-compare`: both sides of a comparison built and measured interleaved, compared
//! with statistics. (Being built: issue 7.)
