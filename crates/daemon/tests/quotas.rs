//! Per-user quotas from the config (with per-user overrides): sandboxes,
//! vCPUs, memory and disk across a user's sandboxes, LLM spend per day —
//! each refused with 403 naming the limit — and the per-token request rate
//! (429 with Retry-After). The admin has no limits unless given some.

mod common;

use std::time::Duration;

use common::Daemon;
use ironclaw_agent::mock::{MockLlm, MockReply};
use reqwest::Method;
use serde_json::{json, Value};

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

async fn create(d: &Daemon, token: &str, body: Value) -> (u16, Value) {
    let mut body = body;
    body["image"] = json!("mini");
    d.call_as(token, Method::POST, "/v1/sandboxes", Some(body))
        .await
}

async fn count(d: &Daemon, token: &str) -> usize {
    let (_, v) = d.call_as(token, Method::GET, "/v1/sandboxes", None).await;
    v["sandboxes"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_quotas_per_user_with_overrides() {
    let d = Daemon::start_with(
        "[quotas]\nmax_sandboxes = 3\nmax_vcpus = 4\nmax_memory_mib = 1024\nmax_disk_mib = 4096\n\
         [quotas.users.carol]\nmax_sandboxes = 1\n",
    )
    .await;
    d.build_image("mini", "busybox").await;
    let bob = d.add_user("bob").await;
    let alice = d.add_user("alice").await;
    let carol = d.add_user("carol").await;
    let small = json!({"vcpus": 1, "memory_mib": 256, "disk_mib": 1024});

    // Count.
    for n in ["b1", "b2", "b3"] {
        let mut b = small.clone();
        b["name"] = json!(n);
        let (st, v) = create(&d, &bob, b).await;
        assert_eq!(st, 201, "{v}");
    }
    let mut b = small.clone();
    b["name"] = json!("b4");
    let (st, v) = create(&d, &bob, b.clone()).await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(message(&v), "quota exceeded: sandboxes 3 of 3 for user bob");
    assert_eq!(count(&d, &bob).await, 3, "a refused create leaves nothing");
    let (_, me) = d.call_as(&carol, Method::GET, "/v1/me", None).await;
    assert_eq!(
        me["quota"],
        json!({"max_sandboxes": 1, "max_vcpus": 4, "max_memory_mib": 1024, "max_disk_mib": 4096,
               "llm_usd_per_day": null, "requests_per_minute": null})
    );
    // The admin creating for Bob counts against Bob's quota.
    let (st, v) = d
        .post("/v1/sandboxes?owner=bob", {
            let mut b = b.clone();
            b["image"] = json!("mini");
            b
        })
        .await;
    assert_eq!(st, 403, "{v}");
    // Removing one frees its place.
    let (st, _) = d
        .call_as(&bob, Method::DELETE, "/v1/sandboxes/b1", None)
        .await;
    assert_eq!(st, 204);
    let (st, v) = create(&d, &bob, b).await;
    assert_eq!(st, 201, "{v}");

    // vCPUs, memory and disk, summed over the user's sandboxes.
    let (st, v) = create(
        &d,
        &alice,
        json!({"name": "a1", "vcpus": 3, "memory_mib": 512, "disk_mib": 1024}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    for (body, want) in [
        (
            json!({"name": "a2", "vcpus": 2, "memory_mib": 256, "disk_mib": 1024}),
            "quota exceeded: vcpus 3 of 4 for user alice (this sandbox needs 2 more)",
        ),
        (
            json!({"name": "a2", "vcpus": 1, "memory_mib": 600, "disk_mib": 1024}),
            "quota exceeded: memory_mib 512 of 1024 for user alice (this sandbox needs 600 more)",
        ),
        (
            json!({"name": "a2", "vcpus": 1, "memory_mib": 256, "disk_mib": 3584}),
            "quota exceeded: disk_mib 1024 of 4096 for user alice (this sandbox needs 3584 more)",
        ),
    ] {
        let (st, v) = create(&d, &alice, body).await;
        assert_eq!((st, message(&v)), (403, want), "{v}");
    }
    assert_eq!(count(&d, &alice).await, 1);
    let (st, v) = create(
        &d,
        &alice,
        json!({"name": "a2", "vcpus": 1, "memory_mib": 512, "disk_mib": 3072}),
    )
    .await;
    assert_eq!(st, 201, "exactly at every limit is fine: {v}");

    // A per-user override; the rest of Carol's limits are the defaults.
    let (st, v) = create(
        &d,
        &carol,
        json!({"name": "c1", "vcpus": 1, "memory_mib": 256, "disk_mib": 1024}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = create(
        &d,
        &carol,
        json!({"name": "c2", "vcpus": 1, "memory_mib": 256, "disk_mib": 1024}),
    )
    .await;
    assert_eq!(
        (st, message(&v)),
        (403, "quota exceeded: sandboxes 1 of 1 for user carol")
    );

    // The admin has no limits.
    for n in ["x1", "x2", "x3", "x4"] {
        let (st, v) = create(
            &d,
            &d.token,
            json!({"name": n, "vcpus": 2, "memory_mib": 512, "disk_mib": 2048}),
        )
        .await;
        assert_eq!(st, 201, "{v}");
    }
}

async fn chat_turn(d: &Daemon, token: &str, text: &str) -> Vec<Value> {
    common::chat::chat_turn(d, token, text).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_spend_per_day_is_capped() {
    let mock = MockLlm::start([
        MockReply::text("first"),
        MockReply::text("for the rich"),
        MockReply::text("for the admin"),
    ])
    .await;
    // A dollar per token: one turn spends far more than the day's budget.
    let config = format!(
        "default_model = \"m\"\n\
         [[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"MOCK_KEY\"\n\
         models = [{{ name = \"m\", id = \"mock-model\", context_window = 100000, max_output_tokens = 1000, input_price_per_mtok = 1000000.0, output_price_per_mtok = 1000000.0 }}]\n\
         [quotas]\nllm_usd_per_day = 0.5\n[quotas.users.rich]\nllm_usd_per_day = 1e12\n",
        mock.openai_base()
    );
    let d = Daemon::start_env(&config, &[("MOCK_KEY", "sk-mock")]).await;
    d.build_image("mini", "busybox").await;
    let bob = d.add_user("bob").await;
    let rich = d.add_user("rich").await;

    let events = chat_turn(&d, &bob, "hello").await;
    let done = events.last().unwrap();
    assert_eq!(done["error"], Value::Null, "{events:?}");
    assert!(done["cost_usd"].as_f64().unwrap() > 0.5, "{done}");
    // Over budget: the next turn is refused before the model is called.
    let events = chat_turn(&d, &bob, "again").await;
    let err = events.iter().find(|e| e["type"] == "error").unwrap();
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("quota exceeded: llm_usd_per_day $")
            && msg.ends_with("of $0.50 spent today (UTC) for user bob"),
        "{msg}"
    );
    let (st, v) = d.call_as(&bob,
        Method::POST,
        "/v1/chat/completions",
        Some(json!({"model": "ironclaw", "messages": [{"role": "user", "content": "hi"}], "stream": true})),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert!(message(&v).contains("llm_usd_per_day"), "{v}");
    assert_eq!(
        mock.requests().len(),
        1,
        "refused turns never reach the model"
    );
    // The refused message was not stored.
    let (_, sessions) = d.call_as(&bob, Method::GET, "/v1/sessions", None).await;
    let total: u64 = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["messages"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 2, "{sessions}");

    // An override, and the admin (no limits).
    let events = chat_turn(&d, &rich, "hello").await;
    assert_eq!(events.last().unwrap()["error"], Value::Null, "{events:?}");
    let events = chat_turn(&d, &d.token, "hello").await;
    assert_eq!(events.last().unwrap()["error"], Value::Null, "{events:?}");
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_is_limited_per_token() {
    let d = Daemon::start_with("[quotas]\nrequests_per_minute = 60\n").await;
    let bob = d.add_user("bob").await;
    let alice = d.add_user("alice").await;
    let mut ok = 0;
    let refused = loop {
        let r = d
            .http
            .get(d.u("/v1/me"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break r;
        }
        assert_eq!(r.status(), 200);
        ok += 1;
        assert!(ok <= 70, "never limited");
    };
    assert!((60..=62).contains(&ok), "{ok} requests before the limit");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    assert!(
        message(&v).contains("requests_per_minute 60 for user bob"),
        "{v}"
    );
    // Other tokens have their own buckets: Alice, a second token of Bob's, the admin.
    let (st, _) = d.call_as(&alice, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 200);
    let (_, fresh) = d.post("/v1/users/bob/tokens", json!({})).await;
    let (st, _) = d
        .call_as(
            fresh["token"].as_str().unwrap(),
            Method::GET,
            "/v1/me",
            None,
        )
        .await;
    assert_eq!(st, 200);
    for _ in 0..100 {
        let (st, _) = d.get("/v1/me").await;
        assert_eq!(st, 200, "the admin has no rate limit");
    }
    // After Retry-After, Bob may go on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, _) = d.call_as(&bob, Method::GET, "/v1/me", None).await;
    assert_eq!(st, 200);
}
