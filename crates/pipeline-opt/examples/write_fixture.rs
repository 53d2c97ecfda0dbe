//! Writes the multi-crate fixture workspace that docs/measurements.md
//! measures: `cargo run -p pipeline-opt --example write_fixture -- DIR`. Twelve crates in
//! three layers (path dependencies only), each with a library of some compile weight, a
//! unit test, an integration test, a doctest and a bench target.

use std::fmt::Write as _;

use camino::Utf8PathBuf;
use pipeline_opt::fixture::FixtureWorkspace;

fn main() {
    let dir: Utf8PathBuf = std::env::args().nth(1).expect("usage: write_fixture DIR").into();
    let mut ws = FixtureWorkspace::layered(12, 4, 2);
    for c in &mut ws.crates {
        let ident = c.name.clone();
        let mut lib = format!("//! Fixture crate `{ident}`.\n\n");
        let deps: Vec<String> = c.deps.iter().map(|d| format!(" + {d}::value()")).collect();
        write!(
            lib,
            "/// One plus the dependencies' values.\n///\n/// ```\n/// assert!({ident}::value() >= 1);\n/// ```\npub fn value() -> u64 {{ 1{} }}\n\n",
            deps.join("")
        )
        .unwrap();
        // Some generic code so that each crate takes a moment to compile.
        for i in 0..40 {
            writeln!(
                lib,
                "pub fn f{i}<T: Copy + Into<u64>>(xs: &[T]) -> u64 {{ xs.iter().map(|&x| x.into().wrapping_mul({i} + 1)).fold(0u64, |a, b| a.wrapping_add(b)) }}"
            )
            .unwrap();
        }
        lib.push_str("\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn value_is_positive() { assert!(super::value() >= 1); }\n}\n");
        c.lib = Some(lib);
        c.tests.push((
            "integration".into(),
            format!("#[test]\nfn sums() {{ assert_eq!({ident}::f3(&[1u8, 2, 3]), 24); }}\n"),
        ));
        c.benches.push((
            "speed".into(),
            format!("fn main() {{ println!(\"{{}}\", {ident}::f7(&[1u32; 100])); }}\n"),
        ));
    }
    let manifest = ws.write(&dir).expect("write the fixture");
    println!("{manifest}");
}
