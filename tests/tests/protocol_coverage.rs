//! Every section of docs/protocol.md is asserted by the project's own tests.
//!
//! Each test names the sections whose rules it asserts with a marker in its
//! doc comment, `§` and the section number (`/// §4.5: ...`). This test
//! reads the document's headings and the workspace's test sources and fails
//! when a section has no test, so a rule added to the document without a
//! test, or a marker left pointing at a section that was renumbered, shows
//! at once. The external conformance probe (tests/tests/sigprobe.rs) is not
//! counted: the project's tests stand without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use signaling_e2e::workspace_root;

/// Sections that hold no rule a test could assert.
const NOT_RULES: &[(&str, &str)] = &[("17", "the changelog")];

/// Where tests live: end-to-end, the server's and the crates' own.
const TEST_ROOTS: &[&str] = &[
    "tests/tests",
    "signaling/tests",
    "signaling/src",
    "signaling/protocol",
    "client/rust",
    "peer",
];

/// A numbered section of the document.
#[derive(Debug, Clone)]
struct Section {
    num: String,
    title: String,
    /// Whether it has text of its own before its first subsection (the
    /// endpoint table of `## 14.` above `### 14.1`, say).
    body: bool,
}

/// The document's sections (`## 4.` and `### 4.5`), in order. A `###`
/// heading counts only under the `##` its number extends, so the
/// changelog's revision headings (`### 1.2 (...)`) are not taken for
/// sections.
fn sections(doc: &str) -> Vec<Section> {
    let mut top = String::new();
    let mut out: Vec<Section> = Vec::new();
    let mut in_section = false;
    for line in doc.lines() {
        let (sub, heading) = match (line.strip_prefix("### "), line.strip_prefix("## ")) {
            (Some(h), _) => (true, h),
            (None, Some(h)) => (false, h),
            _ => {
                if in_section && !line.trim().is_empty() {
                    if let Some(last) = out.last_mut() {
                        last.body = true;
                    }
                }
                continue;
            }
        };
        in_section = false;
        let (num, title) = heading.split_once(' ').unwrap_or((heading, ""));
        let num = num.trim_end_matches('.');
        let numeric = !num.is_empty() && num.split('.').all(|p| p.parse::<u32>().is_ok());
        if !numeric {
            if !sub {
                top.clear();
            }
            continue;
        }
        if !sub {
            top = num.to_string();
        } else if top.is_empty() || !num.starts_with(&format!("{top}.")) {
            continue;
        }
        out.push(Section {
            num: num.to_string(),
            title: title.to_string(),
            body: false,
        });
        in_section = true;
    }
    out
}

/// Sections that state rules: those with no subsection, and those with
/// text of their own above their subsections.
fn rule_sections(all: &[Section]) -> Vec<Section> {
    all.iter()
        .filter(|s| {
            s.body
                || !all
                    .iter()
                    .any(|t| t.num.starts_with(&format!("{}.", s.num)))
        })
        .cloned()
        .collect()
}

/// `§4.5` and `§12` markers in the doc comments (`///`) of `text`.
fn markers(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("///"))
        .flat_map(|l| l.split('§').skip(1))
        .filter_map(|rest| {
            let num: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let num = num.trim_end_matches('.');
            (!num.is_empty()).then(|| num.to_string())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_section_of_the_protocol_has_a_test() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/protocol.md")).expect("docs/protocol.md");
    let all = sections(&doc);
    assert!(all.len() > 30, "too few sections found: {all:?}");

    let mut files = Vec::new();
    for r in TEST_ROOTS {
        rust_files(&root.join(r), &mut files);
    }
    let this = Path::new(file!()).file_name().expect("a file name");
    let mut cited: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        if f.file_name() == Some(this) {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("a readable source");
        let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        for m in markers(&text) {
            cited.entry(m).or_default().insert(name.clone());
        }
    }

    let known: BTreeSet<&str> = all.iter().map(|s| s.num.as_str()).collect();
    let stray: Vec<_> = cited
        .iter()
        .filter(|(m, _)| !known.contains(m.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "markers name sections docs/protocol.md does not have: {stray:?}"
    );

    let mut untested = Vec::new();
    for Section { num, title, .. } in rule_sections(&all) {
        let top = num.split('.').next().unwrap_or_default();
        if NOT_RULES.iter().any(|(n, _)| *n == top) {
            continue;
        }
        match cited.get(&num) {
            Some(where_) => println!("§{num} {title}: {}", where_.len()),
            None => untested.push(format!("§{num} {title}")),
        }
    }
    assert!(
        untested.is_empty(),
        "sections of docs/protocol.md no test names:\n{}",
        untested.join("\n")
    );
}

#[test]
fn markers_and_sections_are_read_as_written() {
    let doc = "# T\n## 1. One\n### 1.1 Sub\n### 1.2 `x`\n## 2. Two\nrule\n### 2.1 Sub\n\
               ## 3. Log\n### 1.3 (old)\n## Notes\n### 4.1 no\n";
    let all = sections(doc);
    let nums: Vec<_> = all.iter().map(|s| s.num.as_str()).collect();
    assert_eq!(nums, ["1", "1.1", "1.2", "2", "2.1", "3"]);
    let rules: Vec<_> = rule_sections(&all).into_iter().map(|s| s.num).collect();
    assert_eq!(rules, ["1.1", "1.2", "2", "2.1", "3"]);
    assert_eq!(
        markers("/// §4.5 and §12. but not § 3\n// §7 nor a comment"),
        ["4.5", "12"]
    );
}
