//! The target runner a user set for the tests, found where cargo and cargo-nextest find
//! it: `CARGO_TARGET_<TRIPLE>_RUNNER`, else `target.<triple>.runner`, else a matching
//! `target.'cfg(..)'.runner` in the cargo config files that apply (nearest first, then
//! `$CARGO_HOME`). The tool's lease runner replaces it on the test stages' command line
//! and runs it in turn, so a user's runner is chained, never dropped.

use camino::{Utf8Path, Utf8PathBuf};

use crate::cargo_config;

/// A runner the user set, as the program and arguments to put before a test binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRunner {
    pub argv: Vec<String>,
    /// Where it was set, for the plan's note: `CARGO_TARGET_…_RUNNER` or
    /// `target.<table>.runner in <file>`.
    pub source: String,
}

/// The variable cargo reads a runner for `triple` from.
pub fn runner_env_var(triple: &str) -> String {
    format!("CARGO_TARGET_{}_RUNNER", triple.to_ascii_uppercase().replace(['-', '.'], "_"))
}

/// The user's runner for `triple` in a run whose commands start in `root`. `target_cfg`
/// answers the target's `cfg` values (`rustc --print cfg`) and is asked only when a
/// config file has a `cfg(..)` runner. A file that does not parse is cargo's to report.
pub fn find_user_runner(
    root: &Utf8Path,
    triple: &str,
    target_cfg: impl FnOnce() -> Vec<String>,
) -> Option<UserRunner> {
    let var = runner_env_var(triple);
    if let Ok(value) = std::env::var(&var)
        && !value.trim().is_empty()
    {
        let argv = resolve(split(&value), root);
        return Some(UserRunner { argv, source: var });
    }
    let configs: Vec<(Utf8PathBuf, toml::Table)> = cargo_config::tables(root).collect();
    let runner_of = |table: &toml::Value| -> Option<Vec<String>> {
        match table.get("runner")? {
            toml::Value::String(s) => Some(split(s)),
            toml::Value::Array(a) => a.iter().map(|v| v.as_str().map(String::from)).collect(),
            _ => None,
        }
    };
    // The triple's own table wins over any `cfg(..)` one, in whichever file.
    for (file, doc) in &configs {
        if let Some(argv) = doc.get("target").and_then(|t| t.get(triple)).and_then(runner_of)
            && !argv.is_empty()
        {
            let source = format!("target.{triple}.runner in {file}");
            return Some(UserRunner { argv: resolve(argv, cargo_config::base(file)), source });
        }
    }
    let mut cfg: Option<Vec<String>> = None;
    let mut target_cfg = Some(target_cfg);
    for (file, doc) in &configs {
        let Some(targets) = doc.get("target").and_then(|t| t.as_table()) else { continue };
        for (key, table) in targets {
            let Some(expr) = key.strip_prefix("cfg(").and_then(|k| k.strip_suffix(')')) else {
                continue;
            };
            let Some(argv) = runner_of(table).filter(|a| !a.is_empty()) else { continue };
            let values =
                cfg.get_or_insert_with(|| target_cfg.take().map(|f| f()).unwrap_or_default());
            if eval_cfg(expr, values) == Some(true) {
                let source = format!("target.'{key}'.runner in {file}");
                return Some(UserRunner { argv: resolve(argv, cargo_config::base(file)), source });
            }
        }
    }
    None
}

/// A runner given as one string: cargo splits it at whitespace, without quoting.
fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Cargo runs a runner program named with a `/` relative to where it was set; a bare
/// name is looked up on PATH.
fn resolve(mut argv: Vec<String>, base: &Utf8Path) -> Vec<String> {
    if let Some(program) = argv.first_mut()
        && program.contains('/')
        && !program.starts_with('/')
    {
        *program = base.join(&*program).to_string();
    }
    argv
}

/// Evaluates the inside of `cfg(..)` against `rustc --print cfg` lines (`unix`,
/// `target_os="linux"`); `None` when it does not parse, which matches nothing.
pub fn eval_cfg(expr: &str, values: &[String]) -> Option<bool> {
    let mut p = CfgParser { s: expr.as_bytes(), i: 0 };
    let v = p.expr(values)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

struct CfgParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl CfgParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn expr(&mut self, values: &[String]) -> Option<bool> {
        let name = self.ident()?;
        match name.as_str() {
            "all" | "any" | "not" if self.eat(b'(') => {
                let mut results = Vec::new();
                while !self.eat(b')') {
                    results.push(self.expr(values)?);
                    if !self.eat(b',') {
                        if !self.eat(b')') {
                            return None;
                        }
                        break;
                    }
                }
                match name.as_str() {
                    "all" => Some(results.iter().all(|r| *r)),
                    "any" => Some(results.iter().any(|r| *r)),
                    _ => match results.as_slice() {
                        [r] => Some(!r),
                        _ => None,
                    },
                }
            }
            _ if self.eat(b'=') => {
                self.ws();
                if self.s.get(self.i) != Some(&b'"') {
                    return None;
                }
                let start = self.i + 1;
                let end = start + self.s[start..].iter().position(|c| *c == b'"')?;
                self.i = end + 1;
                let value = String::from_utf8_lossy(&self.s[start..end]);
                let line = format!("{name}=\"{value}\"");
                Some(values.contains(&line))
            }
            _ => Some(values.contains(&name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_expressions_match_rustc_print_cfg_lines() {
        let values: Vec<String> =
            ["unix", "target_os=\"linux\"", "target_arch=\"x86_64\""].map(String::from).to_vec();
        let cases = [
            ("unix", Some(true)),
            ("windows", Some(false)),
            ("target_os = \"linux\"", Some(true)),
            ("all(unix, target_arch = \"x86_64\")", Some(true)),
            ("all(unix, target_os = \"macos\")", Some(false)),
            ("any(windows, target_os = \"linux\")", Some(true)),
            ("not(windows)", Some(true)),
            ("all()", Some(true)),
            ("not(unix, windows)", None),
            ("unix)", None),
        ];
        for (expr, expect) in cases {
            assert_eq!(eval_cfg(expr, &values), expect, "{expr}");
        }
    }
}
