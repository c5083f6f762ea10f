//! The index against a real SQLite file and a real HTTP embeddings server
//! on loopback that speaks OpenAI's `/v1/embeddings` wire format (its
//! vectors are hashed bags of words: deterministic, and similar for texts
//! that share words), errors included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ironclaw_memory::index::{IndexError, MAX_QUERY_BYTES};
use ironclaw_memory::{Embedder, Index, OpenAiEmbedder, SearchMode, Weights};
use serde_json::{json, Value};

const DIMS: usize = 64;

fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(1469598103934665603u64, |h, b| {
                (h ^ b as u64).wrapping_mul(1099511628211)
            });
        v[(h % DIMS as u64) as usize] += 1.0;
    }
    v
}

struct Fake {
    url: String,
    /// Texts embedded so far.
    texts: Arc<AtomicUsize>,
}

/// The fake endpoint: Bearer `good` gets vectors, anything else a 401
/// with OpenAI's error body.
async fn fake_server() -> Fake {
    let texts = Arc::new(AtomicUsize::new(0));
    let count = texts.clone();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
                let count = count.clone();
                async move {
                    if headers.get("authorization").and_then(|h| h.to_str().ok())
                        != Some("Bearer good")
                    {
                        return (
                            StatusCode::UNAUTHORIZED,
                            Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})),
                        )
                            .into_response();
                    }
                    let inputs: Vec<String> =
                        serde_json::from_value(body["input"].clone()).unwrap();
                    count.fetch_add(inputs.len(), Ordering::SeqCst);
                    // Out of order on purpose: clients must sort by index.
                    let data: Vec<Value> = inputs
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": bag_of_words(t)}))
                        .collect();
                    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
                        .into_response()
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Fake { url, texts }
}

const NOTES: &str = "# Garden\n\nThe tomatoes in the greenhouse need water every morning.\n\n\
## Tools\n\nThe red wheelbarrow lives behind the shed.\n\n\
# Car\n\nThe car's oil was changed in May at the garage on Elm Street.\n";

#[tokio::test]
async fn incremental_indexing_embeds_only_what_changed() {
    let fake = fake_server().await;
    let e = OpenAiEmbedder::new(&fake.url, "bag", Some("good".into()));
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("memory.sqlite")).unwrap();
    let s = idx
        .index_file("alice", "/root/MEMORY.md", NOTES, Some(&e))
        .await
        .unwrap();
    assert_eq!((s.chunks, s.embedded, s.unchanged), (3, 3, false));
    assert_eq!(fake.texts.load(Ordering::SeqCst), 3);
    // Same content: nothing to do, nothing sent.
    let s = idx
        .index_file("alice", "/root/MEMORY.md", NOTES, Some(&e))
        .await
        .unwrap();
    assert!(s.unchanged);
    assert_eq!(fake.texts.load(Ordering::SeqCst), 3);
    // One section changed: one chunk embedded, the others keep theirs.
    let edited = NOTES.replace("in May", "in June");
    let s = idx
        .index_file("alice", "/root/MEMORY.md", &edited, Some(&e))
        .await
        .unwrap();
    assert_eq!((s.chunks, s.embedded), (3, 1));
    assert_eq!(fake.texts.load(Ordering::SeqCst), 4);
    let st = idx.status("alice", Some(e.id())).unwrap();
    assert_eq!((st.files, st.chunks, st.with_vectors), (1, 3, 3));
    // Reopened from disk: the same index.
    drop(idx);
    let idx = Index::open(&dir.path().join("memory.sqlite")).unwrap();
    let r = idx
        .search(
            "alice",
            "when was the oil changed",
            2,
            SearchMode::Hybrid,
            Weights::default(),
            Some(&e),
        )
        .await
        .unwrap();
    assert_eq!(r.mode, SearchMode::Hybrid);
    assert_eq!(r.fallback, None);
    assert_eq!(r.hits[0].path, "/root/MEMORY.md");
    assert!(r.hits[0].snippet.contains("in June"), "{:?}", r.hits);
    assert_eq!((r.hits[0].start_line, r.hits[0].end_line), (9, 11));
    // A file that is gone is forgotten.
    assert_eq!(idx.retain_files("alice", &[]).unwrap(), 1);
    assert_eq!(idx.status("alice", None).unwrap().chunks, 0);
}

#[tokio::test]
async fn without_a_working_embedder_search_is_by_text_and_says_so() {
    let fake = fake_server().await;
    let idx = Index::in_memory().unwrap();
    idx.index_file("alice", "/root/MEMORY.md", NOTES, None)
        .await
        .unwrap();
    let r = idx
        .search(
            "alice",
            "wheelbarrow",
            3,
            SearchMode::Hybrid,
            Weights::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.mode, SearchMode::Text);
    assert!(r.fallback.as_deref().unwrap().contains("text search only"));
    assert!(
        r.hits[0].snippet.contains("red wheelbarrow"),
        "{:?}",
        r.hits
    );
    // A refused key: indexing fails and changes nothing; search falls back
    // and names the endpoint's answer.
    let bad = OpenAiEmbedder::new(&fake.url, "bag", Some("wrong".into()));
    let err = idx
        .index_file(
            "alice",
            "/root/memory/2026-12-01.md",
            "# Today\n\nbought seeds\n",
            Some(&bad),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("401") && err.to_string().contains("Incorrect API key"),
        "{err}"
    );
    assert_eq!(idx.status("alice", None).unwrap().files, 1);
    let r = idx
        .search(
            "alice",
            "wheelbarrow",
            3,
            SearchMode::Vector,
            Weights::default(),
            Some(&bad),
        )
        .await
        .unwrap();
    assert_eq!(r.mode, SearchMode::Text);
    assert!(
        r.fallback.as_deref().unwrap().contains("401"),
        "{:?}",
        r.fallback
    );
    assert!(!r.hits.is_empty());
}

#[tokio::test]
async fn owners_never_see_each_others_chunks_and_bad_queries_are_refused() {
    let idx = Index::in_memory().unwrap();
    idx.index_file(
        "alice",
        "/root/MEMORY.md",
        "alice keeps the spare key under the blue pot\n",
        None,
    )
    .await
    .unwrap();
    idx.index_file(
        "bob",
        "/root/MEMORY.md",
        "bob keeps the spare key in the mailbox\n",
        None,
    )
    .await
    .unwrap();
    let r = idx
        .search(
            "bob",
            "spare key",
            10,
            SearchMode::Text,
            Weights::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.hits.len(), 1);
    assert!(r.hits[0].snippet.contains("mailbox"));
    // FTS syntax in a query is just words.
    let r = idx
        .search(
            "bob",
            "key\" OR owner:alice NEAR(",
            10,
            SearchMode::Text,
            Weights::default(),
            None,
        )
        .await
        .unwrap();
    assert!(r.hits.iter().all(|h| !h.snippet.contains("blue pot")));
    let huge = "x".repeat(1 << 20);
    assert!(matches!(
        idx.search("bob", &huge, 5, SearchMode::Text, Weights::default(), None).await,
        Err(IndexError::QueryTooLong(n)) if n == 1 << 20
    ));
    assert!(huge.len() > MAX_QUERY_BYTES);
    assert!(matches!(
        idx.search("bob", "   ", 5, SearchMode::Text, Weights::default(), None)
            .await,
        Err(IndexError::EmptyQuery)
    ));
    idx.forget_owner("bob").unwrap();
    assert_eq!(idx.status("bob", None).unwrap().files, 0);
    assert_eq!(idx.status("alice", None).unwrap().files, 1);
}
