//! Retrieval quality on a labelled set shipped with the tests
//! (tests/data: ~200 short notes of one person's memory, 30 questions with
//! the notes that answer them). Prints recall@5 for text only (BM25),
//! vectors only (all-MiniLM-L6-v2, local) and hybrid, and requires hybrid
//! to beat both. Needs IRONCLAW_MINILM_DIR (scripts/fetch-minilm.sh;
//! scripts/test.sh sets it).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ironclaw_memory::{Index, LocalEmbedder, SearchMode, Weights};

const K: usize = 5;

#[derive(serde::Deserialize)]
struct Query {
    query: String,
    relevant: Vec<String>,
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The notes, by file name, sorted.
pub fn notes() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(data().join("notes"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_recall_beats_text_and_vectors_alone() {
    let queries: Vec<Query> =
        serde_json::from_str(&std::fs::read_to_string(data().join("queries.json")).unwrap())
            .unwrap();
    let notes = notes();
    let names: HashSet<&str> = notes.iter().map(|(n, _)| n.as_str()).collect();
    assert!(notes.len() >= 190 && queries.len() == 30);
    for q in &queries {
        for r in &q.relevant {
            assert!(names.contains(r.as_str()), "{r} is labelled but missing");
        }
    }
    let Some(dir) = std::env::var_os("IRONCLAW_MINILM_DIR") else {
        eprintln!("skipped: IRONCLAW_MINILM_DIR is not set (scripts/fetch-minilm.sh; scripts/test.sh sets it)");
        return;
    };
    let e = LocalEmbedder::load(Path::new(&dir)).expect("the model loads");
    let idx = Index::in_memory().unwrap();
    for (name, text) in &notes {
        idx.index_file("u", name, text, Some(&e)).await.unwrap();
    }
    let mut recall = Vec::new();
    for mode in [SearchMode::Text, SearchMode::Vector, SearchMode::Hybrid] {
        let mut sum = 0.0;
        let mut missed = Vec::new();
        for q in &queries {
            let r = idx
                .search("u", &q.query, K, mode, Weights::default(), Some(&e))
                .await
                .unwrap();
            assert_eq!(r.mode, mode);
            let found: HashSet<&str> = r.hits.iter().map(|h| h.path.as_str()).collect();
            let got = q
                .relevant
                .iter()
                .filter(|n| found.contains(n.as_str()))
                .count();
            sum += got as f64 / q.relevant.len() as f64;
            if got < q.relevant.len() {
                missed.push(q.query.as_str());
            }
        }
        let r = sum / queries.len() as f64;
        eprintln!("recall@{K} {mode:?}: {r:.3}; missed: {missed:?}");
        recall.push(r);
    }
    println!(
        "recall@{K} over {} queries, {} notes: text {:.3}, vector {:.3}, hybrid {:.3}",
        queries.len(),
        notes.len(),
        recall[0],
        recall[1],
        recall[2]
    );
    assert!(
        recall[2] > recall[0] && recall[2] > recall[1],
        "hybrid must beat both: {recall:?}"
    );
}
