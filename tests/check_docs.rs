//! `bench-results/check-docs`: every figure of the docs agrees with its
//! result file, and an altered figure, or a new one nobody checks, fails.
//! Runs the script on a copy of the docs and results, so that it can alter them.

use std::path::{Path, PathBuf};
use std::process::Command;

const COPIED: &[&str] = &["README.md", "UPSTREAMING.md", "nm-patch/README.md", "nm-patch/COVER-LETTER.md", "meson-compat/nm-handover.8", "bench-results"];

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// A copy of what check-docs reads, under a fresh directory.
fn copy_of_the_docs(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("check-docs-{name}"));
    let _ = std::fs::remove_dir_all(&root);
    for rel in COPIED {
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join(rel), &root.join(rel));
    }
    root
}

fn check_docs(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("python3").arg(root.join("bench-results/check-docs")).args(args).output().expect("run python3");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_docs_agree_with_their_result_files() {
    let root = copy_of_the_docs("as-is");
    let (ok, _, err) = check_docs(&root, &[]);
    assert!(ok, "{err}");
}

/// A table row with a cell (after the first, which names the row) that
/// holds only figures: "359 / 370 / 371", "0 of 20", "12", "456.0; 24.1".
fn measured_row(line: &str) -> bool {
    let line = line.trim();
    let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
    line.starts_with('|')
        && !line.starts_with("|--")
        && cells.iter().skip(1).any(|cell| {
            let rest = cell.replace(" of ", " ").replace("n/a", " ");
            rest.chars().any(|c| c.is_ascii_digit()) && rest.chars().all(|c| c.is_ascii_digit() || " ./;-()".contains(c))
        })
}

#[test]
fn every_table_of_readme_and_upstreaming_is_listed() {
    let root = copy_of_the_docs("list");
    let (ok, listed, err) = check_docs(&root, &["--list"]);
    assert!(ok, "{err}");
    for doc in ["README.md", "UPSTREAMING.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (i, line) in text.lines().enumerate() {
            if measured_row(line) {
                let at = format!("{doc}:{}\t", i + 1);
                assert!(listed.lines().any(|l| l.starts_with(&at)), "{doc}:{} is not listed by --list: {line}", i + 1);
            }
        }
    }
}

#[test]
fn an_altered_figure_fails() {
    let root = copy_of_the_docs("altered");
    let (_, listed, _) = check_docs(&root, &["--list"]);
    // The first figure checked against a result file, changed by one in its last digit.
    let (at, figure) = listed
        .lines()
        .find_map(|l| {
            let mut f = l.split('\t');
            let (at, figure) = (f.next()?, f.next()?);
            (figure.chars().any(|c| c.is_ascii_digit()) && figure != "(the whole line)").then(|| (at.to_owned(), figure.to_owned()))
        })
        .expect("a listed figure");
    let (doc, line) = at.rsplit_once(':').unwrap();
    let line: usize = line.parse().unwrap();
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let digit = figure.rfind(|c: char| c.is_ascii_digit()).unwrap();
    let last = figure[digit..].chars().next().unwrap().to_digit(10).unwrap();
    let altered = format!("{}{}{}", &figure[..digit], (last + 1) % 10, &figure[digit + 1..]);
    let lines: Vec<String> = text.lines().enumerate().map(|(i, l)| if i + 1 == line { l.replacen(&figure, &altered, 1) } else { l.to_owned() }).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = check_docs(&root, &[]);
    assert!(!ok, "{doc}:{line}: {figure} -> {altered} passed:\n{err}");
    assert!(err.contains(&format!("{doc}:{line}")), "{err}");
}

/// check-docs on a copy of the docs with `line` appended to `doc`: whether it passed, and what it said.
fn check_docs_with_line(name: &str, doc: &str, line: &str) -> (bool, String) {
    let root = copy_of_the_docs(name);
    let path = root.join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n{line}\n")).unwrap();
    let (ok, _, err) = check_docs(&root, &[]);
    (ok, err)
}

#[test]
fn a_new_unchecked_figure_fails() {
    let (ok, err) = check_docs_with_line("unchecked", "README.md", "A handover now takes 123 ms.");
    assert!(!ok && err.contains("'123 ms' looks measured"), "{err}");
}

/// A count checked against its column: the result file's row saying 3 TCP
/// resets fails the docs' "0 TCP resets", though other cells of that row hold a 0.
#[test]
fn a_count_whose_column_changed_fails() {
    let root = copy_of_the_docs("count-column");
    let path = root.join("bench-results/wifi-anchors.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let row = text.lines().find(|l| l.starts_with("| Wi-Fi: nm-handover, stock NM (internal DHCP), NM 1.42.4 |")).expect("the stock row").to_owned();
    let mut cells: Vec<&str> = row.split('|').collect();
    assert_eq!(cells[6].trim(), "0", "the TCP resets column moved: {row}");
    cells[6] = " 3 ";
    std::fs::write(&path, text.replace(&row, &cells.join("|"))).unwrap();
    let (ok, _, err) = check_docs(&root, &[]);
    assert!(!ok && err.contains("says '0 TCP resets'"), "{err}");
}

/// A count is a measurement too: "0 IP changes in 40 handovers" says what a run saw.
#[test]
fn a_new_unchecked_count_fails() {
    let (ok, err) = check_docs_with_line("unchecked-count", "UPSTREAMING.md", "Over 300 handovers: 0 IP changes and 0 conflicts.");
    for count in ["300 handovers", "0 IP changes", "0 conflicts"] {
        assert!(!ok && err.contains(&format!("'{count}' looks measured")), "{count}: {err}");
    }
}

/// The cover letter is what a maintainer reads in three minutes: at most
/// 6,000 characters (the review's limit), with every placeholder filled.
#[test]
fn the_cover_letter_is_short_and_complete() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("nm-patch/COVER-LETTER.md")).unwrap();
    let chars = text.chars().count();
    assert!(chars <= 6000, "nm-patch/COVER-LETTER.md has {chars} characters, more than 6000");
    for placeholder in ["COST_PARAGRAPH", "NATIVE_NUMBERS", "OPT_IN_NUMBERS", "TODO"] {
        assert!(!text.contains(placeholder), "nm-patch/COVER-LETTER.md still says {placeholder}");
    }
}
