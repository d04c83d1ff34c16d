//! The shape of the code stays as docs/architecture.md draws it: each module imports only the
//! layers below it, sibling files do not import each other both ways, `main` knows nothing of
//! the window, files stay under 600 lines and functions under 80 (an exception says why in a
//! `// long: <why>` comment right above the function).
//!
//! Reads the sources as text; relies on rustfmt's layout (`cargo fmt --check` runs in
//! `make test`): a function's closing brace sits at the indentation of its `fn` line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use itself and anything listed before it.
const LAYERS: &[&str] = &[
    "error",
    "domain",
    "config",
    "device",
    "attestation",
    "store",
    "label",
    "dps",
    "fleet",
    "fuzzing",
    "workflow",
    "station",
    "sim",
    "gui",
    "cli",
];

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    let mut v = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut v);
    v.sort();
    assert!(v.len() > 20, "found the sources");
    v
}

/// The top-level module a file belongs to (`None` for lib.rs and main.rs).
fn module_of(path: &Path) -> Option<String> {
    let rel = path
        .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Code lines, without comments (line comments and doc comments).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = l.split("//").next().unwrap_or_default();
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// Every `crate::<module>` a line names (`crate::{a, b::c}` names `a` and `b`).
fn crate_refs(line: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `provisioning_station::...` is not `crate::`
        }
        refs.extend(names_at(rest).into_iter().filter(|n| !n.is_empty()));
    }
    refs
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == module)
}

#[test]
fn every_module_is_in_the_layer_list() {
    for (path, _) in sources() {
        if let Some(m) = module_of(&path) {
            assert!(
                rank(&m).is_some(),
                "{}: module `{m}` is not in LAYERS (tests/architecture.rs, docs/architecture.md)",
                path.display()
            );
        }
    }
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let mut violations = Vec::new();
    for (path, text) in sources() {
        let Some(m) = module_of(&path) else { continue };
        let own = rank(&m).unwrap();
        for (n, line) in code_lines(&text) {
            for r in crate_refs(line) {
                let Some(theirs) = rank(&r) else { continue };
                if theirs > own {
                    violations.push(format!(
                        "{}:{n}: `{m}` uses `crate::{r}`, a layer above it",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_layer_check_catches_an_upward_import() {
    // The check itself: a line as a lower layer would write it is found.
    assert_eq!(crate_refs("use crate::workflow::Event;"), ["workflow"]);
    assert_eq!(
        crate_refs("use crate::{error::Error, workflow::Event};"),
        ["error", "workflow"]
    );
    assert_eq!(
        crate_refs("let x = crate::store::now(); provisioning_station::gui::run()"),
        ["store"]
    );
    assert!(rank("workflow") > rank("store"));
}

#[test]
fn sibling_files_do_not_import_each_other_both_ways() {
    // file stem -> the sibling stems it names (via `super::x` or `crate::<module>::x`)
    let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (path, text) in sources() {
        let dir = path.parent().unwrap().to_path_buf();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let module = dir.file_name().unwrap().to_str().unwrap().to_string();
        let mut named = Vec::new();
        for (_, line) in code_lines(&text) {
            for prefix in ["super::".to_string(), format!("crate::{module}::")] {
                let mut rest = line;
                while let Some(i) = rest.find(&prefix) {
                    rest = &rest[i + prefix.len()..];
                    named.extend(names_at(rest));
                }
            }
        }
        by_dir.entry(dir).or_default().insert(stem, named);
    }
    let mut loops = Vec::new();
    for (dir, files) in &by_dir {
        for (a, names) in files {
            for b in names {
                if a < b
                    && files.contains_key(b)
                    && files[b].contains(a)
                    && a != "mod"
                    && b != "mod"
                {
                    loops.push(format!("{}: {a}.rs ⇄ {b}.rs", dir.display()));
                }
            }
        }
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

/// The names a path continues with: `x::...` gives `x`, `{a, b::c}` gives `a` and `b`.
fn names_at(rest: &str) -> Vec<String> {
    let word = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    match rest.strip_prefix('{') {
        Some(group) => group
            .split('}')
            .next()
            .unwrap_or_default()
            .split(',')
            .map(word)
            .filter(|w| !w.is_empty())
            .collect(),
        None => vec![word(rest)],
    }
}

#[test]
fn grouped_imports_name_every_member() {
    assert_eq!(names_at("{app, panels::draw};"), ["app", "panels"]);
    assert_eq!(names_at("worker::spawn("), ["worker"]);
}

#[test]
fn main_knows_nothing_of_the_window() {
    let main =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/main.rs")).unwrap();
    assert!(!main.contains("gui"), "src/main.rs names the GUI");
}

#[test]
fn files_stay_under_the_size_limit() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(_, t)| t.lines().count() > MAX_FILE_LINES)
        .map(|(p, t)| format!("{}: {} lines", p.display(), t.lines().count()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// (first line, line count, name) of every function with a body, in rustfmt layout.
fn functions(text: &str) -> Vec<(usize, usize, String, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let sig = trimmed
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ")
            .trim_start_matches("async ");
        let Some(after) = sig.strip_prefix("fn ") else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if line.trim_end().ends_with('}') || line.trim_end().ends_with(';') {
            continue; // one line, or no body
        }
        let close = " ".repeat(indent) + "}";
        let Some(end) = lines[i + 1..].iter().position(|l| *l == close) else {
            continue; // a declaration without a body (trait method)
        };
        let allowed = lines[i.saturating_sub(4)..i]
            .iter()
            .any(|l| l.trim_start().starts_with("// long:"));
        out.push((i + 1, end + 2, name, allowed));
    }
    out
}

/// A file's code before its unit-test module (a `mod tests;` declaration is not cut).
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests {").next().unwrap()
}

#[test]
fn functions_stay_short_or_say_why() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        // Unit tests are exempt: a scenario reads best in one piece.
        let code = non_test_code(&text);
        if path.file_name().is_some_and(|f| f == "tests.rs") {
            continue;
        }
        for (line, len, name, allowed) in functions(code) {
            if len > MAX_FN_LINES && !allowed {
                long.push(format!("{}:{line}: fn {name}: {len} lines", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them, or say why with `// long: <why>`):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_length_check_measures_bodies() {
    let text = "fn a() {\n    1;\n    2;\n}\n\n    pub fn b(\n        x: u8,\n    ) -> u8 {\n        x\n    }\nfn c() {}\n";
    // Only the unit-test module is cut off, not a `mod tests;` declaration.
    let file = "#[cfg(test)]\nmod tests;\nfn long() {\n}\n#[cfg(test)]\nmod tests {\n}\n";
    assert!(non_test_code(file).contains("fn long()"));
    assert!(!non_test_code(file).contains("mod tests {"));
    let f = functions(text);
    assert_eq!(
        f.iter()
            .map(|(l, n, name, _)| (*l, *n, name.as_str()))
            .collect::<Vec<_>>(),
        [(1, 4, "a"), (6, 5, "b")]
    );
}
