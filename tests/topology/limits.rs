//! Hostile topology files (issue 11, point 5): validation refuses them with one readable
//! diagnostic per line, at the value at fault, and never aborts, hangs or grows without
//! bound. Each point is checked through the library and through `peerlab validate`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerlab::topology::{
    self, Diagnostic, MAX_BROADCASTS, MAX_FILE_BYTES, MAX_NODES, TopologyError,
};

use crate::support::{BIN, POLL};

/// Longest a `peerlab validate` of a hostile file may take before the test calls it hung.
const LIMIT: Duration = Duration::from_secs(60);

fn errors(source: &str) -> Vec<Diagnostic> {
    match topology::parse_str(source, "bad.yaml") {
        Ok(t) => panic!(
            "expected errors, got a valid topology of {} nodes",
            t.node_count()
        ),
        Err(TopologyError { diagnostics }) => diagnostics,
    }
}

/// The only diagnostic of `source`.
fn only(source: &str) -> Diagnostic {
    let mut all = errors(source);
    assert_eq!(all.len(), 1, "expected one diagnostic, got {all:#?}");
    all.remove(0)
}

fn assert_at(d: &Diagnostic, line: usize, path: &str, fragments: &[&str]) {
    assert_eq!((d.line, d.path.as_str()), (line, path), "{d}");
    for f in fragments {
        assert!(d.message.contains(f), "{f:?} not in: {d}");
    }
}

/// `peerlab validate ARGS`: exit code and raw stderr (not re-split into lines, so a
/// missing trailing newline shows). Killed and failed after [`LIMIT`].
fn validate(args: &[&Path]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("validate")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start peerlab");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    // Read on a thread so a chatty stderr cannot block the child while we poll.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("peerlab validate {args:?} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(POLL);
    };
    let stderr = reader.join().expect("stderr reader");
    (status.code(), stderr)
}

/// Every line of `stderr` is one diagnostic of `file`, and the output ends with a newline.
fn assert_one_per_line(stderr: &str, files: &[&Path]) -> usize {
    assert!(stderr.ends_with('\n'), "no trailing newline: {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    for line in &lines {
        assert!(
            files
                .iter()
                .any(|f| line.starts_with(&format!("{}:", f.display()))),
            "a line that is not one diagnostic of {files:?}: {line:?}\nall:\n{stderr}"
        );
    }
    lines.len()
}

const SEVEN_LINES: &str = "name: demo\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: 4294967295\n    stagger: 1ms\n";

#[test]
fn absurd_node_counts_are_refused_at_their_count() {
    // Through the library: the count that goes over the cap, with the room left.
    let d = only(SEVEN_LINES);
    assert_at(
        &d,
        6,
        "groups[0].count",
        &[
            "4294967295 nodes",
            &format!("limit of {MAX_NODES} nodes"),
            "at most 9999 here",
        ],
    );
    assert_eq!(d.column, 12, "{d}");
    let d = only("name: demo\ngenesis:\n  count: 50000000\n");
    assert_at(&d, 3, "genesis.count", &["50000000", "at most 10000 here"]);
    // The sum is what counts (and cannot overflow): several groups each under the cap.
    let many = "name: demo\ngenesis:\n  count: 4000\ngroups:\n  - {name: a, count: 4000}\n  - {name: b, count: 4000}\n  - {name: c, count: 4294967295}\n";
    assert_at(
        &only(many),
        6,
        "groups[1].count",
        &["12000 nodes", "at most 2000 here"],
    );

    // Exactly the cap is accepted.
    let full = format!(
        "name: demo\ngenesis:\n  count: 1\ngroups:\n  - {{name: peers, count: {}}}\n",
        MAX_NODES - 1
    );
    let t = topology::parse_str(&full, "full.yaml").expect("the cap itself is allowed");
    assert_eq!(t.node_count(), MAX_NODES);

    // Through the CLI: refused with exit 2 (not an abort), at file:line, one line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("seven.yaml");
    std::fs::write(&file, SEVEN_LINES).unwrap();
    let (code, stderr) = validate(&[&file]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(assert_one_per_line(&stderr, &[&file]), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}:6:12: groups[0].count: 4294967295 nodes",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn broadcast_counts_are_bounded_too() {
    let over = MAX_BROADCASTS + 1;
    let head = "name: demo\ngenesis:\n  count: 2\n";
    let check = format!("{head}checks:\n  broadcast:\n    count: 4294967295\n");
    assert_at(
        &only(&check),
        6,
        "checks.broadcast.count",
        &[&format!("limit of {MAX_BROADCASTS}")],
    );
    let step = format!("{head}scenario:\n  - broadcast: {{count: {over}}}\n");
    assert_at(
        &only(&step),
        5,
        "scenario[0].broadcast.count",
        &[
            &format!("{over} messages"),
            &format!("limit of {MAX_BROADCASTS}"),
        ],
    );
    let expect = format!("{head}scenario:\n  - expect: {{broadcast: {{count: 4294967295}}}}\n");
    assert_at(
        &only(&expect),
        5,
        "scenario[0].expect.broadcast.count",
        &[&format!("limit of {MAX_BROADCASTS}")],
    );
}

#[test]
fn devices_fifos_and_oversized_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();

    // /dev/zero never ends: refused by its type, at once.
    let zero = Path::new("/dev/zero");
    let d = topology::load(zero).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].message.contains("character device"), "{}", d[0]);
    let (code, stderr) = validate(&[zero]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(assert_one_per_line(&stderr, &[zero]), 1);
    assert!(stderr.contains("not a regular file"), "{stderr}");

    // A FIFO with no writer: opening it must not wait for one.
    let fifo = dir.path().join("pipe.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let (code, stderr) = validate(&[&fifo]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("FIFO"), "{stderr}");

    // A regular file one byte over the cap (valid YAML: a comment) is refused by size.
    let big = dir.path().join("big.yaml");
    let mut text = String::from("name: demo\ngenesis:\n  count: 1\n");
    while (text.len() as u64) <= MAX_FILE_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    let (code, stderr) = validate(&[&big]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("over the limit of {MAX_FILE_BYTES} bytes")),
        "{stderr}"
    );
    // The same text given to the library directly.
    let d = errors(&text);
    assert!(d[0].message.contains("over the limit"), "{}", d[0]);

    // Just under the cap still validates.
    text.truncate(MAX_FILE_BYTES as usize - 100);
    text.truncate(text.rfind('\n').unwrap() + 1);
    std::fs::write(&big, &text).unwrap();
    topology::load(&big).expect("a file under the cap validates");

    // A directory is named as such.
    let d = topology::load(dir.path()).unwrap_err().diagnostics;
    assert!(d[0].message.contains("directory"), "{}", d[0]);
}

#[test]
fn overlapping_partition_sides_are_refused_at_the_later_side() {
    let source = "name: demo\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: 3\nscenario:\n  - partition:\n      sides: [\"genesis-0, peers\", \"peers-1\"]\n";
    let d = only(source);
    assert_at(
        &d,
        9,
        "scenario[0].partition.sides[1]",
        &[
            "side 1 (`peers-1`)",
            "side 0 (`genesis-0, peers`)",
            "both hold peers-1",
        ],
    );
    assert_eq!(d.column, 35, "{d}");

    // Every node in common is named (up to a few), and a three-way split is checked pairwise.
    let three = "name: demo\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: 8\nscenario:\n  - partition:\n      sides:\n        - genesis-0\n        - \"peers-0, peers-1\"\n        - \"peers-*\"\n";
    let d = only(three);
    assert_at(
        &d,
        12,
        "scenario[0].partition.sides[2]",
        &["both hold peers-0, peers-1", "side 1"],
    );

    // Disjoint sides are fine.
    let ok = "name: demo\ngenesis:\n  count: 1\ngroups:\n  - name: peers\n    count: 3\nscenario:\n  - partition:\n      sides: [\"genesis-0, peers-0\", \"peers-1, peers-2\"]\n";
    topology::parse_str(ok, "ok.yaml").expect("disjoint sides validate");

    // Through the CLI.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("overlap.yaml");
    std::fs::write(&file, source).unwrap();
    let (code, stderr) = validate(&[&file]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(assert_one_per_line(&stderr, &[&file]), 1);
    assert!(
        stderr.contains(":9:35: scenario[0].partition.sides[1]: "),
        "{stderr}"
    );
}

#[test]
fn every_diagnostic_is_one_line_even_across_files_and_with_newlines_in_values() {
    let dir = tempfile::tempdir().unwrap();
    // Three semantic problems, one of them echoing a value with a newline in it.
    let first = dir.path().join("first.yaml");
    std::fs::write(
        &first,
        "name: \"bad\\nname\"\ngenesis:\n  count: 1\ngroups:\n  - {name: genesis, count: 1}\n  - {name: \"x\\u001b[31my\", count: 1}\n",
    )
    .unwrap();
    let second = dir.path().join("second.yaml");
    std::fs::write(&second, "name: demo\ngenesis:\n  count: none\n").unwrap();

    let library = topology::load(&first).unwrap_err().diagnostics;
    assert_eq!(library.len(), 3, "{library:#?}");
    for d in &library {
        assert!(!d.to_string().contains(['\n', '\u{1b}']), "{d}");
    }
    assert!(
        library[0].to_string().contains("`bad\\nname`"),
        "{}",
        library[0]
    );

    let (code, stderr) = validate(&[&first, &second]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        assert_one_per_line(&stderr, &[&first, &second]),
        4,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("\n{}:3:10: genesis.count: ", second.display())),
        "the second file's diagnostic starts its own line: {stderr}"
    );
}

#[test]
fn type_errors_echo_the_value_escaped_and_truncated() {
    let head = "name: demo\ngenesis:\n";
    let d = only(&format!("{head}  count: one\n"));
    assert_at(
        &d,
        3,
        "genesis.count",
        &["invalid u32", "found `one`", "whole number"],
    );
    let d = only(&format!("{head}  count: 4294967296\n"));
    assert_at(&d, 3, "genesis.count", &["found `4294967296`"]);
    let d = only(&format!("{head}  count: -3\n"));
    assert_at(&d, 3, "genesis.count", &["found `-3`"]);
    let d = only(&format!("{head}  count: [1, 2]\n"));
    assert_at(&d, 3, "genesis.count", &["found a list"]);
    let d = only(&format!(
        "{head}  count: 1\nchecks:\n  formation:\n    connected: \"yes\\tno\"\n"
    ));
    assert_at(&d, 6, "checks.formation.connected", &["found `yes\\tno`"]);

    let long = "9".repeat(5_000);
    let d = only(&format!("{head}  count: {long}\n"));
    assert!(d.message.contains('…'), "{d}");
    assert!(d.message.len() < 300, "{} characters: {d}", d.message.len());

    // Semantic errors bound their echoes the same way.
    let name = "n".repeat(5_000);
    let d = only(&format!("name: {name}\ngenesis:\n  count: 1\n"));
    assert_eq!(d.path, "name");
    assert!(d.message.contains('…') && d.message.len() < 500, "{d}");
}

#[test]
fn a_missing_key_is_reported_at_its_mapping() {
    // `count` missing from genesis, whose last key is deep down: reported at `genesis:`.
    let source = "name: demo\ngenesis:\n  settings:\n    degree: 2\n  host: spread\ngroups:\n  - name: a\n    count: 1\n";
    let d = only(source);
    assert_at(&d, 2, "genesis", &["missing field `count`", "add it"]);
    assert_eq!(d.column, 1, "{d}");

    // A list item: reported where the item starts.
    let item = "name: demo\ngenesis:\n  count: 1\ngroups:\n  - name: a\n    count: 1\n  - name: b\n    start: manual\n    stagger: 1s\n";
    let d = only(item);
    assert_at(&d, 7, "groups[1]", &["missing field `count`"]);

    // The whole document: at its first line, no path.
    let d = only("# a comment\nname: demo\n");
    assert_at(&d, 2, "", &["missing field `genesis`"]);
}

#[test]
fn multiple_documents_and_alias_bombs_get_words_not_library_internals() {
    let dir = tempfile::tempdir().unwrap();
    let multi = dir.path().join("multi.yaml");
    std::fs::write(
        &multi,
        "name: demo\ngenesis:\n  count: 1\n---\nname: other\ngenesis:\n  count: 1\n",
    )
    .unwrap();
    let d = topology::load(&multi).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].line, 4, "{}", d[0]);
    assert!(
        d[0].message
            .contains("a topology file holds one YAML document; found a second at line 4"),
        "{}",
        d[0]
    );

    // One anchor used 300 times (the alias bomb of a typed file: nested lists of aliases
    // are a type error before they expand), and 1,200 aliases of 200 anchors.
    let uses = vec!["*n"; 300].join(", ");
    let file = dir.path().join("bomb.yaml");
    std::fs::write(
        &file,
        format!(
            "name: demo\nnetworks:\n  - name: &n lan\ngenesis:\n  count: 1\n  networks: [{uses}]\n"
        ),
    )
    .unwrap();
    let d = topology::load(&file).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].message.contains("300 aliases for 1 anchors"),
        "{}",
        d[0]
    );
    assert!(d[0].message.contains("write the values out"), "{}", d[0]);
    let mut many = String::from("name: demo\nnetworks:\n");
    for i in 0..200 {
        many.push_str(&format!("  - name: &a{i} n{i}\n"));
    }
    let refs: Vec<String> = (0..1200).map(|i| format!("*a{}", i % 200)).collect();
    many.push_str(&format!(
        "genesis:\n  count: 1\n  networks: [{}]\n",
        refs.join(", ")
    ));
    let d = errors(&many);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].message.contains("more than 1000 aliases"), "{}", d[0]);

    let (code, stderr) = validate(&[&multi, &file]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        assert_one_per_line(&stderr, &[&multi, &file]),
        2,
        "{stderr}"
    );
    for internal in ["from_str", "multidoc", "Budget", "breach", "{ ", "Options"] {
        assert!(!stderr.contains(internal), "{internal:?} in: {stderr}");
    }
}
