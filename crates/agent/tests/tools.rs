//! Each tool against a real guest agent.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Guest;
use ironclaw_agent::tools::{execute, ToolConfig, ToolOutput};
use serde_json::{json, Value};

struct T {
    guest: Guest,
    cfg: ToolConfig,
}

impl T {
    async fn new() -> T {
        let guest = Guest::start().await;
        let cfg = ToolConfig {
            workdir: guest.workdir(),
            ..Default::default()
        };
        T { guest, cfg }
    }

    async fn run(&self, name: &str, input: Value) -> ToolOutput {
        execute(&self.guest.agent, &self.cfg, name, &input).await
    }

    fn write(&self, name: &str, content: &str) {
        let p = self.guest.work.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.guest.work.path().join(name)).unwrap()
    }
}

fn err(o: &ToolOutput) -> &str {
    assert!(o.is_error, "expected an error, got {o:?}");
    &o.content
}

fn ok(o: &ToolOutput) -> &str {
    assert!(!o.is_error, "expected success, got {o:?}");
    &o.content
}

#[tokio::test]
async fn edit_file_needs_exactly_one_match() {
    let t = T::new().await;
    t.write("f.txt", "a = 1\nb = 1\nc = 2\n");
    let o = t
        .run(
            "edit_file",
            json!({"path": "f.txt", "old_text": "d = 4", "new_text": "x"}),
        )
        .await;
    assert_eq!(
        err(&o),
        format!(
            "old_text not found in {}; read the file and copy the text exactly, whitespace included",
            t.guest.path("f.txt")
        )
    );
    let o = t
        .run(
            "edit_file",
            json!({"path": "f.txt", "old_text": "= 1", "new_text": "= 3"}),
        )
        .await;
    assert!(err(&o).starts_with("old_text matches 2 times in "), "{o:?}");
    assert!(o
        .content
        .ends_with("include more surrounding lines to make it unique, or set replace_all"));
    assert_eq!(
        t.read("f.txt"),
        "a = 1\nb = 1\nc = 2\n",
        "failed edits change nothing"
    );
    let o = t
        .run(
            "edit_file",
            json!({"path": "f.txt", "old_text": "= 1", "new_text": "= 3", "replace_all": true}),
        )
        .await;
    assert!(ok(&o).ends_with("replaced 2 occurrences"));
    assert_eq!(t.read("f.txt"), "a = 3\nb = 3\nc = 2\n");
    let o = t
        .run(
            "edit_file",
            json!({"path": "f.txt", "old_text": "", "new_text": "x"}),
        )
        .await;
    assert!(err(&o).starts_with("old_text must not be empty"));
    let o = t
        .run(
            "edit_file",
            json!({"path": "nope.txt", "old_text": "a", "new_text": "b"}),
        )
        .await;
    assert!(err(&o).contains("nope.txt"), "{o:?}");
}

#[tokio::test]
async fn bash_reports_exit_codes_stderr_and_cuts_long_output() {
    let t = T::new().await;
    let o = t
        .run("bash", json!({"command": "echo out; echo err >&2; exit 3"}))
        .await;
    assert_eq!(err(&o), "out\n[stderr]\nerr\n[exit code 3]");
    let o = t.run("bash", json!({"command": "true"})).await;
    assert_eq!(ok(&o), "(no output)");
    let o = t.run("bash", json!({"command": "pwd"})).await;
    assert_eq!(ok(&o), t.guest.workdir());
    // ~590 KB of output: the head and the tail are kept, with a note.
    let o = t.run("bash", json!({"command": "seq 1 100000"})).await;
    let s = ok(&o);
    assert!(s.starts_with("1\n2\n3\n"), "{}", &s[..50]);
    assert!(s.ends_with("99999\n100000"));
    assert!(s.contains("[... output truncated: 588895 bytes in all, 572511 cut; showing the first 8192 and the last 8192 ...]"), "{s}");
    assert!(s.len() < 17 * 1024);
    let t0 = std::time::Instant::now();
    let o = t
        .run(
            "bash",
            json!({"command": "echo started; sleep 20", "timeout": 1}),
        )
        .await;
    assert_eq!(err(&o), "started\n[killed: timed out after 1 s]");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn read_file_pages_and_refuses_binary() {
    let t = T::new().await;
    let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    t.write("ten.txt", &text);
    assert_eq!(
        ok(&t.run("read_file", json!({"path": "ten.txt"})).await),
        text
    );
    assert_eq!(
        ok(&t
            .run(
                "read_file",
                json!({"path": "ten.txt", "offset": 3, "limit": 2})
            )
            .await),
        "line 3\nline 4\n[lines 3-4 of 10; offset=5 reads on]"
    );
    assert_eq!(
        ok(&t
            .run("read_file", json!({"path": "ten.txt", "offset": "9"}))
            .await),
        "line 9\nline 10\n[lines 9-10 of 10]"
    );
    let o = t
        .run("read_file", json!({"path": "ten.txt", "offset": 50}))
        .await;
    assert_eq!(
        err(&o),
        "invalid arguments: offset 50 is past the end (10 lines)"
    );
    std::fs::write(t.guest.work.path().join("bin"), [0u8, 159, 146, 150, 1, 2]).unwrap();
    let o = t.run("read_file", json!({"path": "bin"})).await;
    assert!(err(&o).contains("looks binary (6 bytes)"), "{o:?}");
    let o = t.run("read_file", json!({"path": "."})).await;
    assert!(err(&o).ends_with("is a directory; use list_dir"), "{o:?}");
    // Long files are cut at a line, with where to go on.
    let big: String = (1..=5000).map(|i| format!("row {i}\n")).collect();
    t.write("big.txt", &big);
    let o = t.run("read_file", json!({"path": "big.txt"})).await;
    assert!(
        ok(&o).contains("of 5000; offset="),
        "{}",
        &o.content[o.content.len() - 80..]
    );
    assert!(o.content.len() <= 16 * 1024 + 100);
    t.write("min.js", &"x".repeat(100_000));
    let o = t.run("read_file", json!({"path": "min.js"})).await;
    assert!(
        ok(&o).contains("[line 1 cut: 16384 of its 100000 bytes shown]"),
        "{}",
        &o.content[16000..]
    );
    assert!(o.content.len() <= 16 * 1024 + 100);
}

#[tokio::test]
async fn write_file_creates_parents_and_keeps_mode() {
    let t = T::new().await;
    let o = t
        .run(
            "write_file",
            json!({"path": "deep/er/x.sh", "content": "#!/bin/sh\necho hi\n"}),
        )
        .await;
    assert_eq!(
        ok(&o),
        format!("wrote 18 bytes to {}", t.guest.path("deep/er/x.sh"))
    );
    let p = t.guest.work.path().join("deep/er/x.sh");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    t.run(
        "write_file",
        json!({"path": "deep/er/x.sh", "content": "#!/bin/sh\necho bye\n"}),
    )
    .await;
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        ok(&t.run("bash", json!({"command": "./deep/er/x.sh"})).await),
        "bye"
    );
    let o = t
        .run("write_file", json!({"path": "deep", "content": "x"}))
        .await;
    assert!(err(&o).ends_with("is a directory; use list_dir"));
}

#[tokio::test]
async fn list_dir_and_grep() {
    let t = T::new().await;
    t.write("src/main.rs", "fn main() {\n    println!(\"hi\");\n}\n");
    t.write("src/lib.py", "def main():\n    pass\n");
    t.write("README", "main docs\n");
    assert_eq!(
        ok(&t.run("list_dir", json!({"path": "src"})).await),
        "lib.py  21\nmain.rs  34"
    );
    assert_eq!(ok(&t.run("list_dir", json!({})).await), "README  10\nsrc/");
    let o = t
        .run("grep", json!({"pattern": "main\\(", "path": "src"}))
        .await;
    let mut lines: Vec<&str> = ok(&o).lines().collect();
    lines.sort();
    let src = t.guest.path("src");
    assert_eq!(
        lines,
        [
            format!("{src}/lib.py:1:def main():"),
            format!("{src}/main.rs:1:fn main() {{")
        ]
    );
    let o = t
        .run("grep", json!({"pattern": "main", "glob": "*.rs"}))
        .await;
    assert_eq!(ok(&o), "./src/main.rs:1:fn main() {");
    assert_eq!(
        ok(&t.run("grep", json!({"pattern": "zebra"})).await),
        "no matches"
    );
    let o = t.run("grep", json!({"pattern": "foo("})).await;
    assert!(err(&o).starts_with("grep failed (exit code 2)"), "{o:?}");
    let o = t.run("list_dir", json!({"path": "missing"})).await;
    assert!(o.is_error);
}

#[tokio::test]
async fn bad_calls_are_errors_for_the_model() {
    let t = T::new().await;
    assert!(err(&t.run("rm_rf", json!({})).await)
        .starts_with("unknown tool \"rm_rf\"; available: bash"));
    assert_eq!(
        err(&t.run("bash", json!({})).await),
        "invalid arguments: missing command"
    );
    assert_eq!(
        err(&t.run("bash", json!({"command": 5})).await),
        "invalid arguments: command must be a string"
    );
    assert_eq!(
        err(&t
            .run("bash", json!({"_invalid_arguments": "{\"command\": "}))
            .await),
        "invalid arguments: arguments are not a JSON object: {\"command\": "
    );
}
