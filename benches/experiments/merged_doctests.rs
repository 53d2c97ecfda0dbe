//! What edition 2024's merged doctests save (the `merged-doctests` recommendation, issue
//! 19): two generated crates with the same N doctests, one of edition 2021 (each doctest
//! compiled and linked as a program of its own) and one of edition 2024 (rustdoc merges
//! them into one), built once, then `cargo test --doc` of each, alternated ROUNDS times.
//! Prints every round and the medians' ratio, 2024 ÷ 2021.
//!
//! ```text
//! cargo run -p pipeline-opt-benches --example merged_doctests -- [N] [ROUNDS]
//! ```

use std::process::Command;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(40);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nmembers = [\"e2021\", \"e2024\"]\nresolver = \"2\"\n",
    )
    .unwrap();
    for edition in ["2021", "2024"] {
        let name = format!("e{edition}");
        let src = root.join(&name).join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            root.join(&name).join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"{edition}\"\n"),
        )
        .unwrap();
        let mut lib = String::new();
        for i in 0..n {
            lib.push_str(&format!(
                "/// ```\n/// let v: Vec<u64> = (0..{i}).collect();\n/// assert_eq!({name}::f{i}(v.len() as u64), {i} + 1);\n/// ```\npub fn f{i}(x: u64) -> u64 {{\n    x + 1\n}}\n"
            ));
        }
        std::fs::write(src.join("lib.rs"), lib).unwrap();
    }
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.args(args).current_dir(root);
        for var in pipeline_opt::toolchain::inherited_cargo_vars() {
            c.env_remove(var);
        }
        let out = c.output().expect("cargo runs");
        assert!(out.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    cargo(&["build", "--quiet", "--workspace", "--tests"]);
    println!("{n} doctests per crate, {rounds} rounds, `cargo test --doc -p CRATE`:");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, krate) in ["e2021", "e2024"].iter().enumerate() {
            let start = Instant::now();
            cargo(&["test", "--quiet", "--doc", "-p", krate]);
            let t = start.elapsed().as_secs_f64();
            println!("round {round}: {krate} {t:.2} s");
            times[i].push(t);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (old, new) = (median(&mut times[0]), median(&mut times[1]));
    println!("median: edition 2021 {old:.2} s, edition 2024 {new:.2} s; ratio {:.2}", new / old);
}
