//! API fuzzing: schemathesis, driven by the daemon's own `/v1/openapi.json`,
//! against a live daemon that already holds real objects (running and
//! stopped sandboxes, a user with a token and a sandbox of their own, a chat
//! session with history, a console session, a file), so most cases reach
//! real handlers instead of 404s. Fixed seed, bounded examples per
//! operation. Fails on any 5xx, on schemathesis errors (network failures,
//! timeouts: a crash or a hang) and if the daemon is dead or deaf afterwards;
//! other findings (schema conformance) are printed, not fatal.
//!
//! Needs schemathesis in `python3` (scripts/test.sh installs the pinned
//! version). Without it the test fails under CI=true and skips elsewhere.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use futures::{SinkExt, StreamExt};
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The seed of every run: the same cases each time.
const SEED: &str = "20261201";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "150";
/// Longest the whole schemathesis run may take before it counts as a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// Names of the objects created before the run.
struct Fixtures {
    user_token: String,
    chat_session: String,
    doomed_session: String,
    doomed_token: String,
}

/// Schemathesis through the Python it was installed into (`python3 -m
/// pip`), whether or not pip's script directory is on PATH.
fn schemathesis() -> Command {
    let mut c = Command::new("python3");
    c.args(["-m", "schemathesis.cli"]);
    c
}

fn schemathesis_version() -> Option<String> {
    let out = schemathesis()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn ws_connect(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next JSON text frame of a WebSocket, within 30 s.
async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("no frame within 30 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The sandbox names both the admin and `fzuser` have, so every name goes
/// with every `?owner=` the run picks: running, stopped, running.
const SANDBOXES: [&str; 3] = ["fz-run", "fz-stop", "fz-box"];

async fn create_fixtures(d: &Daemon) -> Fixtures {
    let (st, v) = d.post("/v1/users", json!({"name": "fzuser"})).await;
    assert_eq!(st, 201, "{v}");
    let user_token = v["token"].as_str().unwrap().to_string();
    d.sandbox("fz-run", json!({})).await;
    for owner in ["admin", "fzuser"] {
        for name in SANDBOXES {
            // The user's own through their own token, the admin's through his.
            let token = if owner == "admin" {
                &d.token
            } else {
                &user_token
            };
            if !(owner == "admin" && name == "fz-run") {
                let resp = d
                    .http
                    .post(d.u("/v1/sandboxes"))
                    .bearer_auth(token)
                    .json(&json!({"name": name, "image": "mini"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201, "create {name} for {owner}");
            }
            if name == "fz-stop" {
                let (st, v) = d
                    .post(
                        &format!("/v1/sandboxes/{name}/stop?owner={owner}"),
                        json!({}),
                    )
                    .await;
                assert_eq!(st, 200, "{v}");
            } else {
                let resp = d
                    .http
                    .put(d.u(&format!(
                        "/v1/sandboxes/{name}/files?owner={owner}&path=/root/fz.txt&mode=644"
                    )))
                    .bearer_auth(&d.token)
                    .body("hello fuzzer\n")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let (st, v) = d
                    .post(
                        &format!("/v1/sandboxes/{name}/fs/mkdir?owner={owner}"),
                        json!({"path": "/root/fzdir/sub", "parents": true}),
                    )
                    .await;
                assert_eq!(st, 204, "{v}");
                let (st, v) = d
                    .post(
                        &format!("/v1/sandboxes/{name}/exec?owner={owner}"),
                        json!({"argv": ["mkfifo", "/root/fzfifo"]}),
                    )
                    .await;
                assert_eq!((st, v["exit_code"].as_i64()), (200, Some(0)), "{v}");
            }
        }
    }
    // Only DELETE /v1/sandboxes/{name} may name this one.
    d.sandbox("fz-doomed", json!({})).await;

    // A second token of the user's, to revoke.
    let (st, v) = d
        .post("/v1/users/fzuser/tokens", json!({"label": "doomed"}))
        .await;
    assert_eq!(st, 201, "{v}");
    let doomed_token = v["token_id"].as_str().unwrap().to_string();
    // A user only the DELETE routes of users name, with a sandbox of their own.
    let (st, v) = d.post("/v1/users", json!({"name": "fzdoomed"})).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = d
        .post(
            "/v1/sandboxes?owner=fzdoomed",
            json!({"name": "fz-doomed-box", "image": "mini"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    // A chat session with one real turn (the mock LLM answers), which also
    // creates the admin's agent sandbox.
    let mut ws = ws_connect(&d.ws_url("/v1/chat/ws")).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "session", "{first}");
    let chat_session = first["id"].as_str().unwrap().to_string();
    ws.send(Message::Text(
        json!({"type": "message", "text": "hello"}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let e = next_json(&mut ws).await;
        if e["type"] == "done" {
            assert!(e["error"].is_null(), "{e}");
            break;
        }
    }
    drop(ws);
    let (st, v) = d.post("/v1/sessions", json!({})).await;
    assert_eq!(st, 201, "{v}");
    let doomed_session = v["id"].as_str().unwrap().to_string();

    // A persistent console session in fz-run (closing the socket detaches).
    let mut ws = ws_connect(&d.ws_url("/v1/sandboxes/fz-run/console/ws?session=fzcon")).await;
    ws.send(Message::Binary(b"echo console-ready\n".to_vec()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains("console-ready\r") {
        if let Ok(Some(Ok(Message::Binary(b)))) =
            tokio::time::timeout(Duration::from_secs(1), ws.next()).await
        {
            seen.extend_from_slice(&b);
        }
    }
    drop(ws);

    // Scheduled tasks, the admin's and the user's: hourly, so none runs
    // during the fuzz; `fz-doomed-task` is for DELETE.
    for token in [&d.token, &user_token] {
        for name in ["fz-task", "fz-doomed-task"] {
            let (st, v) = d
                .call_as(
                    token,
                    reqwest::Method::POST,
                    "/v1/tasks",
                    Some(json!({"name": name, "prompt": "fuzz", "every": "1h"})),
                )
                .await;
            assert_eq!(st, 201, "{v}");
        }
    }

    Fixtures {
        user_token,
        chat_session,
        doomed_session,
        doomed_token,
    }
}

/// Paths inside the sandboxes that file operations are steered to: the
/// fixtures' files, a new name, and the awkward ones (a FIFO, mount
/// points, a device, the root).
const PATHS: [&str; 11] = [
    "/root/fz.txt",
    "/root/fzfifo",
    "/root/fzdir",
    "/root/fzdir/sub",
    "/root/new",
    "/root",
    "/etc/passwd",
    "/proc",
    "/dev/pts",
    "/dev/full",
    "/",
];

/// Values a parameter is steered to, by (path, method, parameter name).
/// `None` leaves schemathesis free. Destructive operations get their own
/// doomed objects so they run on real ones without taking the others away.
fn steer(path: &str, method: &str, param: &str, f: &Fixtures) -> Option<Vec<String>> {
    let v = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect());
    match (path, method, param) {
        ("/v1/sandboxes/{name}", "delete", "name") => v(&["fz-doomed"]),
        ("/v1/sandboxes/{name}", "delete", "owner") => v(&["admin"]),
        // Stop and start toggle `fz-stop` only, so the running ones stay
        // running for exec, files and consoles (fresh sandboxes made by
        // the stateful phase get stopped and started through the links).
        (p, _, "name") if p.ends_with("/stop") || p.ends_with("/start") => v(&["fz-stop"]),
        (p, _, "name") if p.starts_with("/v1/sandboxes/") => v(&SANDBOXES),
        (p, _, "owner") if p.starts_with("/v1/sandboxes") => v(&["fzuser", "admin"]),
        (p, _, "owner") if p.starts_with("/v1/keys") => v(&["fzuser", "admin"]),
        ("/v1/sandboxes/{name}/console/{session}", _, "session") => v(&["fzcon"]),
        (_, _, "session") => v(&["fzcon", "main"]),
        (p, _, "path") if p.starts_with("/v1/sandboxes/") => v(&PATHS),
        ("/v1/users/{name}", "delete", "name") => v(&["fzdoomed"]),
        ("/v1/users/{name}/tokens", "delete", "name") => v(&["fzdoomed"]),
        ("/v1/users/{name}/tokens/{id}", _, "name") => v(&["fzuser"]),
        ("/v1/users/{name}/tokens/{id}", _, "id") => Some(vec![f.doomed_token.clone()]),
        (p, _, "name") if p.starts_with("/v1/users/") => v(&["fzuser", "fzdoomed"]),
        ("/v1/images/{name}", _, "name") => v(&["mini"]),
        ("/v1/tasks/{name}", "delete", "name") => v(&["fz-doomed-task"]),
        (p, _, "name") if p.starts_with("/v1/tasks/") => v(&["fz-task", "fz-doomed-task"]),
        (p, _, "owner") if p.starts_with("/v1/tasks") => v(&["fzuser", "admin"]),
        ("/v1/sessions/{id}", "delete", "id") => Some(vec![f.doomed_session.clone()]),
        ("/v1/sessions/{id}", _, "id") => {
            Some(vec![f.chat_session.clone(), f.doomed_session.clone()])
        }
        _ => None,
    }
}

/// The daemon's OpenAPI document with every parameter moved onto its
/// operations and steered to the fixtures (`enum`), and request bodies given
/// examples that do real work.
fn steered_document(mut doc: Value, f: &Fixtures) -> Value {
    let paths = doc["paths"].as_object_mut().unwrap();
    for (path, item) in paths.iter_mut() {
        let item = item.as_object_mut().unwrap();
        let shared = item.remove("parameters").unwrap_or(json!([]));
        for (method, op) in item.iter_mut() {
            let mut params: Vec<Value> = shared.as_array().unwrap().clone();
            for p in op["parameters"].as_array().cloned().unwrap_or_default() {
                params.retain(|q| q["name"] != p["name"] || q["in"] != p["in"]);
                params.push(p);
            }
            for p in &mut params {
                let name = p["name"].as_str().unwrap().to_string();
                if let Some(values) = steer(path, method, &name, f) {
                    p["schema"] = json!({"type": "string", "enum": values});
                }
            }
            if !params.is_empty() {
                op["parameters"] = Value::Array(params);
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    let path = json!({"type": "string", "enum": PATHS});
    schemas["Mkdir"]["properties"]["path"] = path.clone();
    schemas["Remove"]["properties"]["path"] = path.clone();
    schemas["Rename"]["properties"]["from"] = path.clone();
    schemas["Rename"]["properties"]["to"] = path;
    schemas["Exec"]["example"] =
        json!({"argv": ["sh", "-c", "echo fuzz; ls /root"], "cwd": "/root", "timeout_secs": 5});
    // New sandboxes from the image that exists, on the namespace backend:
    // the VM backends boot real VMs under TCG here (seconds and hundreds of
    // MiB each), and Firecracker cannot boot on this host at all, which is
    // its documented 503 `unavailable`, not a fault.
    schemas["CreateSandbox"]["properties"]["image"] = json!({"type": "string", "enum": ["mini"]});
    schemas["CreateSandbox"]["properties"]["backend"] =
        json!({"type": "string", "enum": ["namespace"]});
    // Real public keys (the first add of each is a 201, later ones 409).
    schemas["AddKey"]["properties"]["key"] = json!({"type": "string", "enum": [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOJoD5fICDaQVqySTltH4hG3UQn4HeKxWWlAMiyGBsbS fuzz1",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA5baT8XKLk6BrE5CvxOIaFHH9XA+hMbHhffnPHAOjKO fuzz2"]});
    // The OpenAI-compatible endpoint talks to the one agent there is.
    schemas["ChatCompletion"]["properties"]["model"] =
        json!({"type": "string", "enum": ["ironclaw"]});
    doc
}

#[derive(Default)]
struct Report {
    requests: usize,
    server_errors: Vec<String>,
    by_status: BTreeMap<u16, usize>,
}

/// Requests and their statuses, from schemathesis's HAR report.
fn read_har(path: &std::path::Path) -> Report {
    let har: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut r = Report::default();
    for e in har["log"]["entries"].as_array().unwrap() {
        r.requests += 1;
        let status = e["response"]["status"].as_u64().unwrap_or(0) as u16;
        *r.by_status.entry(status).or_default() += 1;
        if status >= 500 || status == 0 {
            let body = e["response"]["content"]["text"].as_str().unwrap_or("");
            r.server_errors.push(format!(
                "{status} {} {} {} -> {}",
                e["request"]["method"].as_str().unwrap_or("?"),
                e["request"]["url"].as_str().unwrap_or("?"),
                e["request"]["postData"]["text"].as_str().unwrap_or(""),
                &body[..body.len().min(300)]
            ));
        }
    }
    r
}

/// (failure codes with counts, error texts) from schemathesis's JUnit report.
fn read_junit(text: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut codes = BTreeMap::new();
    for part in text.split("<failure ").skip(1) {
        let body = part.split("</failure>").next().unwrap_or("");
        for line in body.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("- ST") {
                let code = format!("ST{}", rest);
                *codes.entry(code).or_default() += 1;
            }
        }
    }
    let errors = text
        .split("<error ")
        .skip(1)
        .map(|p| p.split("</error>").next().unwrap_or("").to_string())
        .collect();
    (codes, errors)
}

struct Run {
    report: Report,
    codes: BTreeMap<String, usize>,
    errors: Vec<String>,
    output: String,
    status: std::process::ExitStatus,
    elapsed: Duration,
}

/// One schemathesis run against `d` with `token`, killed (and failed) as a
/// hang if it outlives [`RUN_DEADLINE`].
async fn run_schemathesis(
    d: &Daemon,
    schema: &std::path::Path,
    work: &std::path::Path,
    who: &str,
    token: &str,
) -> Run {
    let har = work.join(format!("{who}.har.json"));
    let junit = work.join(format!("{who}.junit.xml"));
    let started = Instant::now();
    let mut child = schemathesis()
        .arg("run")
        .arg(schema)
        .args(["--url", &d.url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        // One worker: the run is then the same for a seed (two workers
        // interleave differently each time), and Hypothesis' caches are
        // not shared between threads (two workers now and then hit its
        // "inconsistent results" on a cache race).
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--checks", "all", "--continue-on-failure"])
        .args(["--generation-database", "none"])
        .args(["--no-color", "--report", "har,junit"])
        .arg("--report-har-path")
        .arg(&har)
        .arg("--report-junit-path")
        .arg(&junit)
        // Image builds download and unpack Debian packages (tens of
        // seconds each, unbounded in number): not something to fuzz.
        .args(["--exclude-name", "POST /v1/images"])
        // A watch streams until the client leaves: every call would hang.
        .args(["--exclude-name", "GET /v1/sandboxes/{name}/watch"])
        // A channel named after any env var the daemon has (PATH) would
        // start polling the real service: outside the test's loopback.
        // Its bad input is covered by tests/channels_*.rs.
        .args(["--exclude-name", "POST /v1/channels"])
        .current_dir(work)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn schemathesis");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > RUN_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("fuzz: schemathesis ({who}) still running after {RUN_DEADLINE:?}: a hang");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = reader.join().unwrap();
    let elapsed = started.elapsed();
    assert!(
        har.exists(),
        "fuzz: schemathesis ({who}, {status}) wrote no HAR report:\n{output}"
    );
    if let Some(keep) = std::env::var_os("IRONCLAW_FUZZ_KEEP") {
        // For a look at every request afterwards (the data dir goes away).
        std::fs::create_dir_all(&keep).unwrap();
        for f in [&har, &junit, &schema.to_path_buf()] {
            let _ = std::fs::copy(f, std::path::Path::new(&keep).join(f.file_name().unwrap()));
        }
    }
    let report = read_har(&har);
    let (codes, errors) = read_junit(&std::fs::read_to_string(&junit).unwrap_or_default());
    Run {
        report,
        codes,
        errors,
        output,
        status,
        elapsed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    let Some(version) = schemathesis_version() else {
        let why = "schemathesis is not installed (scripts/test.sh installs it: \
                   python3 -m pip install 'schemathesis==4.32.5')";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("fuzz: {why}");
        }
        eprintln!("fuzz: skipped: {why}");
        return;
    };
    eprintln!("fuzz: using {version}");

    let mock =
        MockLlm::start((0..5000).map(|i| MockReply::text(format!("fuzzed answer {i}")))).await;
    let base = mock.openai_base();
    // Exec timeouts short, so a fuzzed command that would run for ever is
    // cut in seconds.
    let mut d = Daemon::start_env(
        "exec_timeout_secs = 5\nexec_timeout_max_secs = 10\n",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", "sk-fuzz"),
            ("IRONCLAW_MODEL", "mock-model"),
        ],
    )
    .await;
    let fixtures = create_fixtures(&d).await;

    let doc: Value = d
        .http
        .get(d.u("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let work = d.data_dir().join("fuzz");
    std::fs::create_dir_all(&work).unwrap();
    let schema = work.join("openapi.json");
    std::fs::write(
        &schema,
        serde_json::to_vec_pretty(&steered_document(doc, &fixtures)).unwrap(),
    )
    .unwrap();
    // The user first (their own namespace; admin routes and others'
    // objects refused), then the admin (every route, everyone's objects;
    // the stateful phase follows links to whatever names responses
    // return, so it may remove `fzuser` and their token along the way).
    let mut total = Report::default();
    let mut codes = BTreeMap::new();
    let mut errors = Vec::new();
    for (who, token) in [
        ("fzuser", fixtures.user_token.clone()),
        ("admin", d.token.clone()),
    ] {
        let run = run_schemathesis(&d, &schema, &work, who, &token).await;
        println!("{}", run.output);

        // The daemon survived: its process is alive and it answers.
        let alive = d.child.as_mut().unwrap().try_wait().unwrap().is_none();
        assert!(alive, "fuzz: ironclawd died during the {who} run");
        let health = d
            .http
            .get(d.u("/v1/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("fuzz: ironclawd does not answer /v1/health after the run");
        assert_eq!(health.status(), 200);

        println!(
            "fuzz: as {who}: {} requests, statuses {:?}, {:.0} s, schemathesis {}",
            run.report.requests,
            run.report.by_status,
            run.elapsed.as_secs_f64(),
            run.status
        );
        total.requests += run.report.requests;
        total.server_errors.extend(run.report.server_errors);
        for (c, n) in run.codes {
            *codes.entry(c).or_insert(0) += n;
        }
        errors.extend(run.errors);
    }

    println!(
        "fuzz: {} requests, {} server errors",
        total.requests,
        total.server_errors.len()
    );
    common::record_summary("fuzz", total.requests, total.server_errors.len());
    let others: Vec<String> = codes
        .iter()
        .filter(|(c, _)| !c.starts_with("ST101") && !c.starts_with("ST102"))
        .map(|(c, n)| format!("{c} x{n}"))
        .collect();
    if !others.is_empty() {
        println!(
            "fuzz: other findings (not server errors): {}",
            others.join("; ")
        );
    }
    assert!(
        total.server_errors.is_empty(),
        "fuzz: server errors:\n{}",
        total.server_errors.join("\n")
    );
    // A request that got no answer (connection refused or reset, a
    // timeout) is a crash or a hang; other schemathesis errors are its own
    // trouble generating a case, reported but not the daemon's fault.
    // (Titles as schemathesis 4 gives them, on the error's first line.)
    let (network, internal): (Vec<_>, Vec<_>) = errors.iter().partition(|e| {
        let title = e.lines().next().unwrap_or("");
        [
            "Network Error",
            "Unresponsive Operation",
            "Unhealthy API",
            "Server Unavailable",
        ]
        .iter()
        .any(|m| title.contains(m))
    });
    if !internal.is_empty() {
        println!(
            "fuzz: {} schemathesis internal errors (not the daemon's): {}",
            internal.len(),
            internal
                .iter()
                .map(|e| {
                    let first = e.lines().next().unwrap_or("");
                    first.rsplit('>').next().unwrap_or(first)
                })
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    assert!(
        network.is_empty(),
        "fuzz: requests without an answer (crash or hang):\n{}",
        network
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert!(
        total.requests > 1000,
        "fuzz: only {} requests",
        total.requests
    );

    // Whatever the run made goes away with it: every sandbox removes
    // cleanly, and no process, cgroup or loop device of theirs is left.
    let ids: Vec<String> = std::fs::read_dir(d.data_dir().join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    let (_, v) = d.get("/v1/sandboxes").await;
    for s in v["sandboxes"].as_array().unwrap() {
        let (name, owner) = (s["name"].as_str().unwrap(), s["owner"].as_str().unwrap());
        let (st, v) = d
            .req(
                reqwest::Method::DELETE,
                &format!("/v1/sandboxes/{name}?owner={owner}"),
                None,
            )
            .await;
        assert_eq!(st, 204, "remove {owner}/{name}: {v}");
    }
    let data = d.data_dir().display().to_string();
    let left: Vec<_> = common::processes_matching(&data)
        .into_iter()
        .filter(|p| p.contains("ironclaw-guest"))
        .collect();
    assert!(left.is_empty(), "fuzz: orphans: {left:?}");
    for id in &ids {
        for base in [
            "/sys/fs/cgroup/pids/ironclaw",
            "/sys/fs/cgroup/memory/ironclaw",
            "/sys/fs/cgroup/ironclaw",
        ] {
            assert!(
                !std::path::Path::new(&format!("{base}/{id}")).exists(),
                "fuzz: cgroup {base}/{id} left behind"
            );
        }
    }
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing =
            std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
        assert!(
            !backing.contains(&data),
            "fuzz: loop device {:?} still on {backing}",
            e.file_name()
        );
    }
    println!(
        "fuzz: {} sandboxes made and removed, nothing left",
        ids.len()
    );
    drop(mock);
}

// Regression tests for what the fuzzer found (they need no schemathesis).

/// An exec racing a stop used to get 409 "sandbox 'x' is running; start it
/// with `ironclaw sandbox start x`": the stop had already taken the
/// sandbox out of the live set while the store still said running. Now the
/// exec waits for the stop and answers with the state it ends in; so does
/// an exec already in flight whose agent connection the stop closes (it
/// used to answer 503 "connection to the guest agent closed").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_racing_a_stop_never_says_running() {
    let d = Daemon::start().await;
    d.sandbox("race", json!({})).await;
    let mut wrong = Vec::new();
    for round in 0..5 {
        let execs: Vec<_> = (0..8)
            .map(|_| {
                let http = d.http.clone();
                let url = d.u("/v1/sandboxes/race/exec");
                let token = d.token.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..20 {
                        let r = http
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"argv": ["true"]}))
                            .send()
                            .await
                            .unwrap();
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap();
                        seen.push((status, v));
                    }
                    seen
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (st, v) = d.post("/v1/sandboxes/race/stop", json!({})).await;
        assert_eq!(st, 200, "{v}");
        for e in execs {
            for (status, v) in e.await.unwrap() {
                match status {
                    200 => {}
                    409 => {
                        let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
                        if !msg.contains("is stopped") {
                            wrong.push(format!("round {round}: {msg}"));
                        }
                    }
                    _ => wrong.push(format!("round {round}: {status} {v}")),
                }
            }
        }
        let (st, v) = d.post("/v1/sandboxes/race/start", json!({})).await;
        assert_eq!(st, 200, "{v}");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `?owner=bob&owner=bob` used to fail to parse and silently mean the
/// caller's own namespace: the admin's DELETE of bob's `dev` removed the
/// admin's own `dev`. Given twice, `owner` is now a 400 and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_given_twice_is_refused_not_ignored() {
    let d = Daemon::start().await;
    let (st, v) = d.post("/v1/users", json!({"name": "bob"})).await;
    assert_eq!(st, 201, "{v}");
    d.sandbox("dev", json!({})).await;
    let (st, v) = d
        .post(
            "/v1/sandboxes?owner=bob",
            json!({"name": "dev", "image": "mini"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    let (st, v) = d
        .req(
            reqwest::Method::DELETE,
            "/v1/sandboxes/dev?owner=bob&owner=bob",
            None,
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let (st, v) = d.get("/v1/sandboxes?owner=bob&owner=bob").await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = d
        .post(
            "/v1/sandboxes?owner=bob&owner=bob",
            json!({"name": "dev2", "image": "mini"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    // Both sandboxes are still there, each with its owner.
    let (_, v) = d.get("/v1/sandboxes").await;
    let mut owners: Vec<_> = v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["owner"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect();
    owners.sort();
    assert_eq!(owners, ["admin/dev", "bob/dev"]);
    // One `owner` still works.
    let (st, v) = d.get("/v1/sandboxes/dev?owner=bob").await;
    assert_eq!((st, v["owner"].as_str()), (200, Some("bob")), "{v}");
}

/// Every error is the JSON error shape, those of axum's extractors too:
/// a bad query string, a plain GET on a WebSocket route, and a malformed
/// optional body (which used to be dropped silently: `POST /v1/sessions`
/// with `[null, null]` made a session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractor_rejections_are_json_errors() {
    let d = Daemon::start().await;
    d.sandbox("box", json!({})).await;
    for path in [
        "/v1/sandboxes/box/fs/stat",
        "/v1/sandboxes/box/fs/stat?path=/a&path=/b",
        "/v1/sandboxes/box/logs?bytes=-1",
        "/v1/sandboxes/box/console/ws?rows=x",
    ] {
        let (st, v) = d.get(path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{path}: {v}");
    }
    for path in [
        "/v1/sandboxes/box/exec/ws",
        "/v1/sandboxes/box/console/ws",
        "/v1/chat/ws",
    ] {
        let (st, v) = d.get(path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("WebSocket upgrade"),
            "{path}: {v}"
        );
    }

    let (_, before) = d.get("/v1/sessions").await;
    let before = before["sessions"].as_array().unwrap().len();
    for body in ["[null, null]", "{\"agnet\": \"x\"}", "{"] {
        let r = d
            .http
            .post(d.u("/v1/sessions"))
            .bearer_auth(&d.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let (_, after) = d.get("/v1/sessions").await;
    assert_eq!(after["sessions"].as_array().unwrap().len(), before);
    // No body, or an empty one, is still fine.
    let r = d
        .http
        .post(d.u("/v1/sessions"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (st, v) = d.post("/v1/users", json!({"name": "carol"})).await;
    assert_eq!(st, 201, "{v}");
    let r = d
        .http
        .post(d.u("/v1/users/carol/tokens"))
        .bearer_auth(&d.token)
        .header("content-type", "application/json")
        .body("{\"lable\": \"typo\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (st, v) = d
        .post("/v1/users/carol/tokens", json!({"label": "ok"}))
        .await;
    assert_eq!(st, 201, "{v}");
}

/// `DELETE /v1/images/NAME` with a name longer than a file name used to
/// reach open(2) and come back as a 500 (ENAMETOOLONG). Names that cannot
/// be images are refused like `POST /v1/images` refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_impossible_image_name_is_a_400_not_a_500() {
    let d = Daemon::start().await;
    let long = "a".repeat(300);
    let zalgo = "%E1%B9%B0%CC%BA%CC%BA".repeat(40);
    for name in [long.as_str(), zalgo.as_str(), "Mini", "a%20b", "-x"] {
        let (st, v) = d
            .req(reqwest::Method::DELETE, &format!("/v1/images/{name}"), None)
            .await;
        assert_eq!(st, 400, "{name}: {v}");
        assert_eq!(v["error"]["code"], "invalid_name", "{name}: {v}");
    }
    let (st, v) = d
        .req(reqwest::Method::DELETE, "/v1/images/nosuch", None)
        .await;
    assert_eq!(st, 404, "{v}");
}

/// Removing or renaming a mount point inside a sandbox (`/proc`,
/// `/dev/pts`) or uploading over a bind-mounted device (`/dev/full`) got
/// EBUSY from the kernel, which the guest passed on as "other": a 500.
/// It is the sandbox's state, a 409, and the sandbox is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_mount_points_are_a_409_not_a_500() {
    let d = Daemon::start().await;
    d.sandbox("busy", json!({})).await;
    for (op, body) in [
        ("fs/remove", json!({"path": "/proc"})),
        ("fs/remove", json!({"path": "/dev/pts"})),
        ("fs/rename", json!({"from": "/proc", "to": "/proc2"})),
    ] {
        let (st, v) = d
            .post(&format!("/v1/sandboxes/busy/{op}"), body.clone())
            .await;
        assert_eq!(st, 409, "{op} {body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("busy"),
            "{op} {body}: {v}"
        );
    }
    let r = d
        .http
        .put(d.u("/v1/sandboxes/busy/files?path=/dev/full"))
        .bearer_auth(&d.token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    let out = d
        .exec("busy", &["sh", "-c", "ls /proc/self/status /dev/pts"])
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
}

/// The WebSocket routes, which schemathesis cannot drive: garbage first
/// messages, odd control messages (zero and huge terminal sizes, signals
/// that do not exist), binary where text is expected, for exec, console
/// and chat. Each socket ends with an error message or a close, never a
/// hang, and the daemon and the sandbox keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_garbage_is_refused_cleanly() {
    let mock = MockLlm::start((0..50).map(|i| MockReply::text(format!("ws answer {i}")))).await;
    let base = mock.openai_base();
    let mut d = Daemon::start_env(
        "exec_timeout_secs = 5\n",
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", "sk-fuzz"),
            ("IRONCLAW_MODEL", "mock-model"),
        ],
    )
    .await;
    d.sandbox("ws", json!({})).await;

    /// Send `msgs`, then read until the server closes or 10 s pass
    /// (a hang); true if it closed or said why.
    async fn probe(url: &str, msgs: Vec<Message>) -> Result<Vec<String>, String> {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        for m in msgs {
            if ws.send(m).await.is_err() {
                break;
            }
        }
        let mut texts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ws.next()).await {
                Err(_) => return Err(format!("no close within 10 s; got {texts:?}")),
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return Ok(texts),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let done = t.contains("\"exit\"") || t.contains("\"error\"");
                    texts.push(t);
                    if done {
                        let _ = ws.close(None).await;
                        return Ok(texts);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
    let t = |s: &str| Message::Text(s.to_string());
    let exec = d.ws_url("/v1/sandboxes/ws/exec/ws");
    let cases: Vec<(String, Vec<Message>)> = vec![
        (exec.clone(), vec![t("not json")]),
        (exec.clone(), vec![Message::Binary(vec![0, 1, 2, 255])]),
        (exec.clone(), vec![t("{\"argv\": []}")]),
        (exec.clone(), vec![t("{\"argv\": [\"\"]}")]),
        (
            exec.clone(),
            vec![t(
                "{\"argv\": [\"true\"], \"timeout_ms\": 18446744073709551615}",
            )],
        ),
        (
            exec.clone(),
            vec![t(
                "{\"argv\": [\"true\"], \"tty\": {\"rows\": 0, \"cols\": 0}}",
            )],
        ),
        (
            exec.clone(),
            vec![t(
                "{\"argv\": [\"true\"], \"tty\": {\"rows\": 65535, \"cols\": 65535}}",
            )],
        ),
        (
            exec.clone(),
            vec![
                t("{\"argv\": [\"sleep\", \"3\"], \"stdin\": true}"),
                t("{\"type\": \"signal\", \"signal\": 99999}"),
                t("{\"type\": \"signal\", \"signal\": -9}"),
                t("{\"type\": \"resize\", \"rows\": 0, \"cols\": 0}"),
                t("{\"type\": \"bogus\"}"),
                t("garbage"),
                t("{\"type\": \"eof\"}"),
                t("{\"type\": \"eof\"}"),
                t("{\"type\": \"signal\", \"signal\": 9}"),
            ],
        ),
        (
            d.ws_url("/v1/sandboxes/ws/console/ws?session=fz&rows=0&cols=0"),
            vec![
                t("{\"type\": \"resize\", \"rows\": 0, \"cols\": 0}"),
                t("{\"type\": \"resize\", \"rows\": 65535, \"cols\": 65535}"),
                t("not json"),
                Message::Binary(b"exit\n".to_vec()),
            ],
        ),
        (
            d.ws_url("/v1/chat/ws"),
            vec![
                t("not json"),
                t("{\"type\": \"message\", \"text\": \"\"}"),
                t("{\"type\": \"message\", \"text\": \"hi\", \"model\": \"no-such-model\"}"),
                t("{\"type\": \"bogus\"}"),
                Message::Binary(vec![1, 2, 3]),
                t("{\"type\": \"stop\"}"),
                t("{\"type\": \"new\"}"),
                t("{\"type\": \"message\", \"text\": \"hello\"}"),
            ],
        ),
    ];
    let mut hangs = Vec::new();
    for (url, msgs) in cases {
        let shown = format!("{} {:?}", url.split('?').next().unwrap(), msgs);
        match probe(&url, msgs).await {
            Ok(texts) => eprintln!("ws probe {shown}: {texts:?}"),
            Err(e) => hangs.push(format!("{shown}: {e}")),
        }
    }
    // The chat socket answers but does not close by itself; every other
    // probe must have ended.
    hangs.retain(|h| !h.contains("/v1/chat/ws"));
    assert!(hangs.is_empty(), "{hangs:#?}");
    let alive = d.child.as_mut().unwrap().try_wait().unwrap().is_none();
    assert!(alive, "ironclawd died");
    let out = d.exec("ws", &["echo", "still fine"]).await;
    assert_eq!(out["stdout"], "still fine\n", "{out}");
    drop(mock);
}

/// Downloading a FIFO used to hang for ever (the guest's open(2) waited
/// for a writer, holding one of its blocking threads each time), and a
/// device such as /dev/zero came back as an empty 200. Downloads are of
/// regular files; the rest is a 400 at once. Through a symlink the body
/// used to be cut short: Content-Length was the symlink's own size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloading_a_fifo_or_a_device_is_a_400_not_a_hang() {
    let d = Daemon::start().await;
    d.sandbox("dl", json!({})).await;
    let out = d
        .exec(
            "dl",
            &[
                "sh",
                "-c",
                "mkfifo /root/fifo && echo hi > /root/f && ln -s /root/f /root/link && ln -s /root/fifo /root/fifolink",
            ],
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let get = |path: &str| {
        d.http
            .get(d.u(&format!("/v1/sandboxes/dl/files?path={path}")))
            .bearer_auth(&d.token)
            .timeout(Duration::from_secs(10))
            .send()
    };
    for path in ["/root/fifo", "/root/fifolink", "/dev/zero", "/dev/null"] {
        let r = get(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a regular file"),
            "{path}: {v}"
        );
    }
    for path in ["/root/f", "/root/link"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "hi\n", "{path}");
    }
}
