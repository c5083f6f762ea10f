//! all-MiniLM-L6-v2 run by candle in-process, from the weights
//! scripts/fetch-minilm.sh unpacks (scripts/test.sh exports
//! IRONCLAW_MINILM_DIR). Meaning, not bytes: paraphrases are near, unrelated
//! texts far, and a search by meaning finds what shares no word.

use std::path::PathBuf;
use std::time::Instant;

use ironclaw_memory::{Embedder, Index, LocalEmbedder, SearchMode, Weights};

fn model_dir() -> Option<PathBuf> {
    std::env::var_os("IRONCLAW_MINILM_DIR").map(PathBuf::from)
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_puts_paraphrases_near_and_finds_by_meaning() {
    let Some(dir) = model_dir() else {
        eprintln!("skipped: IRONCLAW_MINILM_DIR is not set (scripts/fetch-minilm.sh; scripts/test.sh sets it)");
        return;
    };
    let t = Instant::now();
    let e = LocalEmbedder::load(&dir).expect("the model loads");
    eprintln!("model loaded in {:?}", t.elapsed());
    let texts: Vec<String> = [
        "The cat is sitting on the mat.",
        "A kitten rests on a rug.",
        "Stock markets fell sharply on Monday.",
        "The cat is sitting on the mat.",
    ]
    .map(String::from)
    .to_vec();
    let v = e.embed(&texts).await.unwrap();
    assert_eq!(v.len(), 4);
    for x in &v {
        assert_eq!(x.len(), 384);
        let n: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "norm {n}");
    }
    let (near, far) = (cos(&v[0], &v[1]), cos(&v[0], &v[2]));
    eprintln!("cos(paraphrase) = {near:.3}, cos(unrelated) = {far:.3}");
    assert!(near > 0.5 && far < 0.2 && near - far > 0.4, "{near} {far}");
    // Deterministic, and batch-independent (padding is masked out).
    assert!(cos(&v[0], &v[3]) > 0.9999);
    let alone = e.embed(&texts[..1]).await.unwrap();
    assert!(cos(&alone[0], &v[0]) > 0.9999);

    // A query sharing no word with the note it should find.
    let idx = Index::in_memory().unwrap();
    let notes = "# Health\n\nDentist appointment on Thursday at 3pm.\n\n# Car\n\nThe car's tyres were replaced last week.\n";
    idx.index_file("u", "/root/MEMORY.md", notes, Some(&e))
        .await
        .unwrap();
    let q = "when do I see the tooth doctor";
    let r = idx
        .search("u", q, 1, SearchMode::Vector, Weights::default(), Some(&e))
        .await
        .unwrap();
    assert_eq!(r.mode, SearchMode::Vector);
    assert!(r.hits[0].snippet.contains("Dentist"), "{:?}", r.hits);
    let text_only = idx
        .search("u", q, 1, SearchMode::Text, Weights::default(), None)
        .await
        .unwrap();
    assert!(
        text_only
            .hits
            .iter()
            .all(|h| !h.snippet.contains("Dentist")),
        "BM25 should not find it by words: {:?}",
        text_only.hits
    );

    // Throughput on this machine, for the record.
    let chunk =
        "A paragraph of a daily note, about the garden, the car and the plans for the week ahead. "
            .repeat(4);
    let batch: Vec<String> = (0..64).map(|i| format!("{i}: {chunk}")).collect();
    let t = Instant::now();
    e.embed(&batch).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "local embedding: {:.1} chunks/s ({} chunks of ~{} words)",
        64.0 / secs,
        batch.len(),
        chunk.split_whitespace().count()
    );
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = LocalEmbedder::load(dir.path())
        .err()
        .expect("no model there");
    let msg = err.to_string();
    assert!(
        msg.contains("config.json") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
}
