//! Argument forms that xflags 0.4 does not parse, rewritten into forms it does before it
//! sees them: `--flag=value` becomes `--flag value`, and a short flag glued to its value
//! (`-pNAME`, `-Ffeat`, `-j4`) becomes `-p NAME`. Nothing after `--` is touched.

use std::ffi::OsString;

/// The short flags that take a value (`-p/--package`, `-F/--features`, `-j/--jobs`).
const SHORT_WITH_VALUE: [char; 3] = ['p', 'F', 'j'];

/// The arguments as xflags can parse them; see the module comment.
pub fn normalise_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if let Some((flag, value)) = text.strip_prefix("--").and_then(|_| text.split_once('=')) {
            out.extend([flag.into(), value.into()]);
            continue;
        }
        let mut chars = text.chars();
        if let (Some('-'), Some(short)) = (chars.next(), chars.next())
            && SHORT_WITH_VALUE.contains(&short)
            && !chars.as_str().is_empty()
        {
            let value = chars.as_str().strip_prefix('=').unwrap_or(chars.as_str());
            out.extend([format!("-{short}").into(), value.into()]);
            continue;
        }
        out.push(arg);
    }
    out
}
