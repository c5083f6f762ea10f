//! Scheduled tasks end to end: a real daemon, real agent sandboxes, the
//! scripted mock LLM answering each run, and daemon crashes and restarts
//! on the same data dir.

mod common;

use std::time::{Duration, Instant};

use common::chat::{self, chat_turn};
use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use reqwest::Method;
use serde_json::{json, Value};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc3339(t: i64) -> String {
    // Seconds since the epoch to YYYY-MM-DDTHH:MM:SSZ without a date crate:
    // ask `date`, which every test host has.
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn add(d: &Daemon, token: &str, body: Value) -> (u16, Value) {
    d.call_as(token, Method::POST, "/v1/tasks", Some(body))
        .await
}

async fn runs(d: &Daemon, name: &str) -> Vec<Value> {
    let (st, v) = d.get(&format!("/v1/tasks/{name}/runs")).await;
    assert_eq!(st, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// Poll until `f` holds (every 100 ms), or panic after `secs`.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Model requests whose user message is `prompt` (one per run: the runs
/// here call no tools).
fn requests_for(mock: &MockLlm, prompt: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.raw.contains(prompt))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_every_and_cron_run_isolated_and_cancel_stops_them() {
    let mock = MockLlm::start((0..40).map(|_| MockReply::text("task ran fine"))).await;
    let d = chat::mock_daemon(&mock, "").await;
    let now = unix_now();
    let (st, at) = add(
        &d,
        &d.token,
        json!({"name": "once", "prompt": "prompt-once", "at": rfc3339(now + 3)}),
    )
    .await;
    assert_eq!(st, 201, "{at}");
    assert_eq!(at["next_run"], rfc3339(now + 3));
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "often", "prompt": "prompt-often", "every": "2s"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["every"], "2s");
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "cronned", "prompt": "prompt-cron", "cron": "*/3 * * * * *", "tz": "Europe/Berlin"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["tz"], "Europe/Berlin");

    // The first run starts the user's agent sandbox; give it time.
    wait_for(60, "two finished runs of every and cron", || async {
        let ok = |r: &Vec<Value>| r.iter().filter(|r| r["state"] == "ok").count();
        ok(&runs(&d, "often").await) >= 2 && ok(&runs(&d, "cronned").await) >= 2
    })
    .await;
    wait_for(30, "the at run", || async {
        runs(&d, "once").await.first().map(|r| r["state"] == "ok") == Some(true)
    })
    .await;

    let once = runs(&d, "once").await;
    assert_eq!(once.len(), 1, "{once:?}");
    assert_eq!(once[0]["result"], "task ran fine");
    assert_eq!(once[0]["slot"], now + 3);
    let (_, t) = d.get("/v1/tasks/once").await;
    assert!(t["next_run"].is_null(), "{t}");
    // The run's own conversation: the prompt and the answer.
    let (st, run) = d
        .get(&format!("/v1/tasks/once/runs/{}", once[0]["id"]))
        .await;
    assert_eq!(st, 200, "{run}");
    let msgs = run["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["content"][0]["text"], "prompt-once", "{run}");
    assert_eq!(msgs.last().unwrap()["role"], "assistant");
    // Another task's run id through this task is not found.
    let (st, _) = d
        .get(&format!("/v1/tasks/often/runs/{}", once[0]["id"]))
        .await;
    assert_eq!(st, 404);
    for bad in ["x", "99999999999999999999999"] {
        let (st, v) = d.get(&format!("/v1/tasks/once/runs/{bad}")).await;
        assert_eq!(st, 404, "{v}");
        assert!(v["error"]["message"].is_string(), "a JSON error: {v}");
    }
    assert_eq!(requests_for(&mock, "prompt-once"), 1);

    for name in ["often", "cronned"] {
        let rs = runs(&d, name).await;
        let mut slots: Vec<i64> = rs.iter().map(|r| r["slot"].as_i64().unwrap()).collect();
        slots.dedup();
        assert_eq!(slots.len(), rs.len(), "one run per slot: {rs:?}");
        for r in rs.iter().filter(|r| r["state"] != "running") {
            assert_eq!(r["state"], "ok", "{r}");
            assert_eq!(r["result"], "task ran fine");
        }
    }
    // Precise ticks: each run was claimed within a second of its slot
    // (second resolution: started_at is stored in whole seconds).
    let mut late = Vec::new();
    for name in ["once", "often", "cronned"] {
        for r in runs(&d, name).await {
            let started = chrono_free_parse(r["started_at"].as_str().unwrap());
            late.push(started - r["slot"].as_i64().unwrap());
        }
    }
    println!(
        "tasks: {} runs claimed {}..{} s after their slot",
        late.len(),
        late.iter().min().unwrap(),
        late.iter().max().unwrap()
    );
    assert!(late.iter().all(|l| (0..=1).contains(l)), "{late:?}");
    let cron_slots: Vec<i64> = runs(&d, "cronned")
        .await
        .iter()
        .map(|r| r["slot"].as_i64().unwrap())
        .collect();
    assert!(cron_slots.iter().all(|s| s % 3 == 0), "{cron_slots:?}");

    // Each run is its own conversation: no chat session was made, and the
    // model saw only the task's prompt.
    let (_, sessions) = d.get("/v1/sessions").await;
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(0),
        "{sessions}"
    );
    let r = mock
        .requests()
        .into_iter()
        .find(|r| r.raw.contains("prompt-often"))
        .unwrap();
    let msgs = r.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "system + the prompt only: {msgs:?}");
    // The task tools are offered to the runs too.
    assert!(r.raw.contains("schedule_task"));

    // The list shows the last run.
    let (_, list) = d.get("/v1/tasks").await;
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, ["cronned", "often", "once"]);
    assert_eq!(list[1]["last_run"]["result"], "task ran fine");

    // Cancel: no further runs.
    for name in ["often", "cronned"] {
        let (st, _) = d
            .req(Method::DELETE, &format!("/v1/tasks/{name}"), None)
            .await;
        assert_eq!(st, 204);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (often, cron) = (
        requests_for(&mock, "prompt-often"),
        requests_for(&mock, "prompt-cron"),
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(requests_for(&mock, "prompt-often"), often);
    assert_eq!(requests_for(&mock, "prompt-cron"), cron);
    let (st, _) = d.get("/v1/tasks/often/runs").await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_runs_once_across_sigkill_and_missed_slots_catch_up_once() {
    // The first run answers slowly, so the daemon can be killed during it.
    let mock = MockLlm::start([MockReply::Slow {
        chunks: (0..20).map(|i| format!("w{i} ")).collect(),
        delay: Duration::from_millis(500),
    }])
    .await;
    let mut d = chat::mock_daemon(&mock, "").await;
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "slow", "prompt": "prompt-slow", "at": rfc3339(unix_now() + 2)}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    wait_for(60, "the model call of the run", || async {
        requests_for(&mock, "prompt-slow") == 1
    })
    .await;
    assert_eq!(runs(&d, "slow").await[0]["state"], "running");
    d.kill_daemon();
    d.spawn();
    let rs = runs(&d, "slow").await;
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(rs[0]["state"], "failed");
    assert_eq!(rs[0]["error"], "interrupted by a daemon restart");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&d, "slow").await.len(), 1);
    assert_eq!(requests_for(&mock, "prompt-slow"), 1, "never run twice");

    // Missed slots: every 5 s, daemon down for three slots; one catch-up
    // run (for the first missed slot) at start, then the regular grid.
    for _ in 0..10 {
        mock.push(MockReply::text("caught up"));
    }
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "grid", "prompt": "prompt-grid", "every": "5s"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    d.stop_daemon();
    let first = chrono_free_parse(v["next_run"].as_str().unwrap());
    // Past the third slot.
    while unix_now() < first + 11 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.spawn();
    let restarted = unix_now();
    wait_for(30, "the catch-up run", || async {
        runs(&d, "grid").await.iter().any(|r| r["state"] == "ok")
    })
    .await;
    let rs = runs(&d, "grid").await;
    let (_, t) = d.get("/v1/tasks/grid").await;
    let next = chrono_free_parse(t["next_run"].as_str().unwrap());
    // Unless the next regular slot came already, exactly the catch-up ran.
    let regular = rs
        .iter()
        .filter(|r| r["slot"].as_i64().unwrap() > first)
        .count();
    assert_eq!(
        rs.iter().filter(|r| r["slot"] == first).count(),
        1,
        "{rs:?}"
    );
    assert_eq!(rs.len(), 1 + regular, "{rs:?}");
    if unix_now() < first + 15 {
        assert_eq!(
            rs.len(),
            1,
            "one catch-up run for three missed slots: {rs:?}"
        );
        assert_eq!(next, first + 15, "back on the 5 s grid");
    }
    assert!(restarted >= first + 11);
    assert_eq!(rs.last().unwrap()["result"], "caught up");

    // Removing a task stops its run in progress: the slow answer (10 s)
    // is cut, so its usage is never recorded.
    let (st, _) = d.req(Method::DELETE, "/v1/tasks/grid", None).await;
    assert_eq!(st, 204);
    // The unused quick replies go, so the slow one comes next.
    mock.clear();
    mock.push(MockReply::Slow {
        chunks: (0..20).map(|i| format!("s{i} ")).collect(),
        delay: Duration::from_millis(500),
    });
    let (_, me) = d.get("/v1/me").await;
    let before = me["usage"]["input_tokens"].as_u64().unwrap();
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "stopme", "prompt": "prompt-stopme", "at": rfc3339(unix_now() + 2)}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    wait_for(30, "the run's model call", || async {
        requests_for(&mock, "prompt-stopme") == 1
    })
    .await;
    let (st, _) = d.req(Method::DELETE, "/v1/tasks/stopme", None).await;
    assert_eq!(st, 204);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, me) = d.get("/v1/me").await;
    assert_eq!(
        me["usage"]["input_tokens"].as_u64().unwrap(),
        before,
        "{me}"
    );
}

/// `YYYY-MM-DDTHH:MM:SSZ` to unix seconds (via `date`).
fn chrono_free_parse(s: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_missed_skip_a_slot_missed_while_down_does_not_run() {
    // No provider: a run would be recorded as failed, so any run shows.
    let mut d = Daemon::start_with("[tasks]\nmissed = \"skip\"\n").await;
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "tick", "prompt": "p", "every": "3s"}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, a) = add(
        &d,
        &d.token,
        json!({"name": "one", "prompt": "p", "at": rfc3339(unix_now() + 2)}),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    d.stop_daemon();
    tokio::time::sleep(Duration::from_secs(4)).await;
    d.spawn();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let missed = chrono_free_parse(v["next_run"].as_str().unwrap());
    let rs = runs(&d, "tick").await;
    let (_, t) = d.get("/v1/tasks/tick").await;
    // Only a slot after the restart may have run, never the missed one.
    assert!(
        rs.iter().all(|r| r["slot"].as_i64().unwrap() > missed),
        "{rs:?} {t}"
    );
    let next = chrono_free_parse(t["next_run"].as_str().unwrap());
    assert!(next > missed && (next - missed) % 3 == 0, "{t}");
    assert!(
        runs(&d, "one").await.is_empty(),
        "the missed at task was skipped"
    );
    let (_, o) = d.get("/v1/tasks/one").await;
    assert!(o["next_run"].is_null(), "{o}");

    // And a slot that comes while up runs (fails: no provider, recorded).
    wait_for(10, "a run after the restart", || async {
        !runs(&d, "tick").await.is_empty()
    })
    .await;
    let r = &runs(&d, "tick").await[0];
    wait_for(10, "it to finish", || async {
        runs(&d, "tick").await[0]["state"] != "running"
    })
    .await;
    let r2 = &runs(&d, "tick").await[0];
    assert_eq!(r2["state"], "failed", "{r} {r2}");
    assert!(
        r2["error"].as_str().unwrap().contains("no LLM provider"),
        "{r2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_limits_and_isolation() {
    let d = Daemon::start_with("[tasks]\nmax_per_user = 2\nmax_total = 3\n").await;
    let bob = d.add_user("bob").await;
    let later = rfc3339(unix_now() + 3600);
    let bad = [
        (
            json!({"name": "a", "prompt": "p", "cron": "61 * * * *"}),
            "bad cron expression",
        ),
        (
            json!({"name": "a", "prompt": "p", "cron": "every day"}),
            "bad cron expression",
        ),
        (
            json!({"name": "a", "prompt": "p", "at": "2020-01-01T00:00:00Z"}),
            "in the past",
        ),
        (
            json!({"name": "a", "prompt": "p", "at": "soonish"}),
            "bad time",
        ),
        (
            json!({"name": "a", "prompt": "p", "every": "1h", "tz": "Mars/Olympus"}),
            "unknown time zone",
        ),
        (
            json!({"name": "a", "prompt": "p"}),
            "exactly one of at, every or cron",
        ),
        (
            json!({"name": "a", "prompt": "p", "every": "1h", "cron": "* * * * *"}),
            "exactly one",
        ),
        (
            json!({"name": "a", "prompt": "p", "every": "0s"}),
            "at least 1 second",
        ),
        (
            json!({"name": "a", "prompt": "p", "every": "fortnightly"}),
            "bad duration",
        ),
        (
            json!({"name": "a", "prompt": "x".repeat(1 << 20), "every": "1h"}),
            "the limit is 16384",
        ),
        (json!({"name": "a", "prompt": "  ", "every": "1h"}), "empty"),
        (
            json!({"name": "Bad Name", "prompt": "p", "every": "1h"}),
            "invalid task name",
        ),
        (json!({"prompt": "p", "every": "1h"}), "missing name"),
        (
            json!({"name": "a", "prompt": "p", "every": "1h", "colour": "red"}),
            "unknown field",
        ),
    ];
    for (body, want) in bad {
        let (st, v) = add(&d, &bob, body.clone()).await;
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(st, 400, "{body:.200}: {v}");
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/tasks", None).await;
    assert_eq!(list, json!([]), "bad input stored nothing");

    let (st, v) = add(&d, &bob, json!({"name": "a", "prompt": "p", "at": later})).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = add(&d, &bob, json!({"name": "a", "prompt": "p", "every": "1h"})).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already have a task named 'a'"));
    let (st, _) = add(&d, &bob, json!({"name": "b", "prompt": "p", "every": "1h"})).await;
    assert_eq!(st, 201);
    let (st, v) = add(&d, &bob, json!({"name": "c", "prompt": "p", "every": "1h"})).await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_per_user"),
        "{v}"
    );
    // The admin has the same name in their own namespace.
    let (st, _) = add(
        &d,
        &d.token,
        json!({"name": "a", "prompt": "p", "every": "1h"}),
    )
    .await;
    assert_eq!(st, 201);
    let (st, v) = add(
        &d,
        &d.token,
        json!({"name": "z", "prompt": "p", "every": "1h"}),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_total"),
        "{v}"
    );

    // Bob sees his own only; another user's task answers like a missing one.
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/tasks", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list.as_array().unwrap().iter().all(|t| t["owner"] == "bob"));
    let (st, v) = d
        .call_as(&bob, Method::GET, "/v1/tasks?owner=admin", None)
        .await;
    assert_eq!(st, 404, "{v}");
    let (st, _) = d
        .call_as(&bob, Method::DELETE, "/v1/tasks/a?owner=admin", None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = d
        .call_as(&bob, Method::GET, "/v1/tasks/nope/runs", None)
        .await;
    assert_eq!(st, 404);
    let (_, mine) = d.get("/v1/tasks/a").await;
    assert_eq!(mine["owner"], "admin");
    assert_eq!(mine["every"], "1h");
    // The admin may act for bob.
    let (st, v) = d.get("/v1/tasks?owner=bob").await;
    assert_eq!((st, v.as_array().unwrap().len()), (200, 2));
    let (st, _) = d.req(Method::DELETE, "/v1/tasks/b?owner=bob", None).await;
    assert_eq!(st, 204);
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/tasks", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The CLI: add, ls, runs, rm, and its own checks.
    let out = d.cli(&["task", "rm", "a"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.cli(&[
        "task",
        "add",
        "nightly",
        "--prompt",
        "tidy up",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("scheduled nightly: cron 0 3 * * * (Europe/Berlin)"),
        "{stdout}"
    );
    let out = d.cli(&["task", "ls", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "nightly");
    assert!(
        v[0]["next_run"].as_str().unwrap().ends_with(":00:00Z"),
        "{v}"
    );
    let out = d.cli(&["task", "ls"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("NEXT RUN") && stdout.contains("nightly"),
        "{stdout}"
    );
    let out = d.cli(&["task", "runs", "nightly", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    let out = d.cli(&[
        "task", "add", "x", "--prompt", "p", "--every", "1h", "--at", &later,
    ]);
    assert!(!out.status.success(), "clap refuses two schedules");
    let out = d.cli(&["task", "add", "x", "--prompt", "p", "--cron", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad cron expression"),
        "{out:?}"
    );
    let out = d.cli(&["--owner", "bob", "task", "ls", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let out = d.cli(&["task", "rm", "nightly"]);
    assert!(out.status.success());
    let out = d.cli(&["task", "rm", "nightly"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_schedules_lists_and_cancels_tasks_with_its_tools() {
    let mock = MockLlm::start([
        MockReply::tool(
            "schedule_task",
            json!({"name": "standup", "prompt": "summarise the day", "cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}),
        ),
        MockReply::tool("schedule_task", json!({"prompt": "bad one", "cron": "99 * * * *"})),
        MockReply::tool("list_tasks", json!({})),
        MockReply::text("Scheduled standup."),
        MockReply::tool("cancel_task", json!({"name": "standup"})),
        MockReply::text("Cancelled."),
    ])
    .await;
    let d = chat::mock_daemon(&mock, "").await;
    let bob = d.add_user("bob").await;
    let (_, events) = chat_turn(&d, &bob, "remind me every weekday at nine").await;
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_end").collect();
    assert_eq!(ends.len(), 3, "{events:?}");
    assert_eq!(ends[0]["is_error"], false, "{}", ends[0]);
    assert!(ends[0]["output"]
        .as_str()
        .unwrap()
        .starts_with("scheduled standup: cron '0 9 * * 1-5' (Europe/Berlin)"));
    assert_eq!(ends[1]["is_error"], true);
    assert!(ends[1]["output"]
        .as_str()
        .unwrap()
        .contains("bad cron expression"));
    assert!(ends[2]["output"].as_str().unwrap().contains("standup"));

    // The task is bob's, in the API.
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/tasks", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "standup");
    assert_eq!(list[0]["owner"], "bob");
    assert_eq!(list[0]["prompt"], "summarise the day");
    let (_, admins) = d.get("/v1/tasks").await;
    assert_eq!(admins, json!([]));

    let (_, events) = chat_turn(&d, &bob, "cancel it").await;
    let end = events.iter().find(|e| e["type"] == "tool_end").unwrap();
    assert_eq!(end["output"], "cancelled standup");
    let (_, list) = d.call_as(&bob, Method::GET, "/v1/tasks", None).await;
    assert_eq!(list, json!([]));
}
