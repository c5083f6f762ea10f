//! The daemon and the agent reach sandboxes only through the `Backend`
//! trait and the typed methods of `AgentClient`: no protocol messages,
//! no cgroup or namespace helpers. Checked on the source text, so a new
//! use fails here before review.

use std::path::{Path, PathBuf};

/// What no file under the checked trees may name.
const FORBIDDEN: [&str; 5] = [
    "HostMsg",
    "GuestMsg",
    "ironclaw_proto",
    "cgroup::",
    "namespace::",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `file:line: needle` under `dirs` naming a forbidden item.
fn violations(dirs: &[PathBuf]) -> Vec<String> {
    let mut files = Vec::new();
    for d in dirs {
        rust_files(d, &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            for needle in FORBIDDEN {
                if line.contains(needle) {
                    found.push(format!(
                        "{}:{}: {needle}: {}",
                        f.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

fn checked_trees() -> Vec<PathBuf> {
    let daemon = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![daemon.join("src"), daemon.join("../agent/src")]
}

#[test]
fn daemon_and_agent_name_no_protocol_or_host_helpers() {
    let found = violations(&checked_trees());
    assert!(
        found.is_empty(),
        "use the typed methods of ironclaw_sandbox (AgentClient, Session, \
         FileReader/FileWriter, Backend, host::checks, types::*) instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_a_forbidden_use() {
    // The same walk over a tree holding one offending file must fail.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("api")).unwrap();
    for i in 0..21 {
        std::fs::write(src.join(format!("m{i}.rs")), "fn f() {}\n").unwrap();
    }
    std::fs::write(
        src.join("api/exec.rs"),
        "use ironclaw_sandbox::cgroup::Cgroup;\nfn f(m: HostMsg) {}\n",
    )
    .unwrap();
    let found = violations(&[src]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("exec.rs:1: cgroup::"), "{found:?}");
    assert!(found[1].contains("exec.rs:2: HostMsg"), "{found:?}");
}
