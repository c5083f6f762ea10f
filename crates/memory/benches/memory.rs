//! Memory index benchmark, each figure next to a brute-force reference
//! measured in the same run:
//!
//! - indexing 10,000 chunks (500 files of 20 sections) into an on-disk
//!   index: time and file size, against plain SQLite inserts of the same
//!   rows into a table without FTS;
//! - query latency p50/p99 for text (FTS5 BM25), vector (f32 blobs scanned
//!   in SQLite) and hybrid search, against a linear scan over all chunk
//!   texts in memory, a scan of the same vectors in an in-memory `Vec`,
//!   and both;
//! - local embedding throughput (all-MiniLM-L6-v2 with candle, on however
//!   many cores there are), batched against one text per call.
//!
//! Vectors for indexing and queries come from a feature-hashing embedder
//! (384 dimensions, microseconds a text), so the index is measured, not the
//! model; the model's own cost is the last section.
//! Run: `scripts/bench.sh --memory` (or `cargo bench -p ironclaw-memory
//! --bench memory`; the embedding part needs IRONCLAW_MINILM_DIR).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ironclaw_memory::embed::normalized;
use ironclaw_memory::{EmbedError, Embedder, Index, LocalEmbedder, SearchMode, Weights};

const FILES: usize = 500;
const SECTIONS: usize = 20;
const QUERIES: usize = 300;
const DIMS: usize = 384;
const K: usize = 5;

struct HashEmbedder;

fn hash_vec(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMS];
    for w in words(text) {
        let h = w.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        v[(h % DIMS as u64) as usize] += if h & (1 << 40) == 0 { 1.0 } else { -1.0 };
    }
    normalized(v)
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn id(&self) -> &str {
        "bench:hash-384"
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| hash_vec(t)).collect())
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// xorshift64*: a fixed sequence, so every run indexes the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// English words from the retrieval test's notes.
fn vocabulary() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/notes");
    let mut set = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        set.extend(words(&text).filter(|w| w.len() > 2 && !w.chars().any(|c| c.is_ascii_digit())));
    }
    set.into_iter().collect()
}

/// FILES files of SECTIONS sections, each a heading and a paragraph of
/// 40-80 words (with a reference number now and then): one chunk each.
fn corpus(vocab: &[String], rng: &mut Rng) -> Vec<(String, String)> {
    (0..FILES)
        .map(|f| {
            let mut text = String::new();
            for s in 0..SECTIONS {
                text.push_str(&format!("## {} {s}\n\n", vocab[rng.below(vocab.len())]));
                let n = 40 + rng.below(41);
                let para: Vec<String> = (0..n)
                    .map(|i| {
                        if i % 23 == 7 {
                            format!("REF-{}", rng.below(100_000))
                        } else {
                            vocab[rng.below(vocab.len())].clone()
                        }
                    })
                    .collect();
                text.push_str(&para.join(" "));
                text.push_str(".\n\n");
            }
            (format!("/root/memory/notes-{f:03}.md"), text)
        })
        .collect()
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn file_size(p: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", p.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// The reference text search: every chunk's text scanned for every query
/// word, ranked by how many occur.
fn scan_text(texts: &[String], q: &[String]) -> Vec<usize> {
    let mut scored: Vec<(usize, usize)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (q.iter().filter(|w| t.contains(w.as_str())).count(), i))
        .filter(|(n, _)| *n > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(K * 4);
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The reference vector search: dot products over a `Vec` in memory.
fn scan_vectors(vectors: &[Vec<f32>], q: &[f32]) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.truncate(K * 4);
    scored.into_iter().map(|(_, i)| i).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let vocab = vocabulary();
    let mut rng = Rng(0x1c0ffee);
    let files = corpus(&vocab, &mut rng);
    let dir = tempfile::tempdir().unwrap();
    println!(
        "memory index: {FILES} files x {SECTIONS} sections, vocabulary of {} words; {} cores",
        vocab.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Indexing.
    let path = dir.path().join("memory.db");
    let idx = Index::open(&path).unwrap();
    let t = Instant::now();
    for (p, text) in &files {
        idx.index_file("bench", p, text, Some(&HashEmbedder))
            .await
            .unwrap();
    }
    let index_time = t.elapsed();
    let status = idx.status("bench", Some(HashEmbedder.id())).unwrap();
    assert_eq!(status.chunks, FILES * SECTIONS);
    assert_eq!(status.with_vectors, status.chunks);

    // The reference: the same rows (texts and vector blobs) into a plain
    // table, one transaction per file, no chunking, FTS or hashing.
    let ref_path = dir.path().join("plain.db");
    let all_chunks: Vec<Vec<ironclaw_memory::Chunk>> = files
        .iter()
        .map(|(_, t)| ironclaw_memory::chunk_markdown(t, Default::default()))
        .collect();
    let texts: Vec<String> = all_chunks
        .iter()
        .flatten()
        .map(|c| c.indexed.to_lowercase())
        .collect();
    let vectors: Vec<Vec<f32>> = all_chunks
        .iter()
        .flatten()
        .map(|c| hash_vec(&c.indexed))
        .collect();
    let mut plain = rusqlite::Connection::open(&ref_path).unwrap();
    plain.pragma_update(None, "journal_mode", "WAL").unwrap();
    plain.pragma_update(None, "synchronous", "NORMAL").unwrap();
    plain
        .execute_batch(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, path TEXT, text TEXT, vector BLOB)",
        )
        .unwrap();
    let t = Instant::now();
    let mut n = 0;
    for ((p, _), cs) in files.iter().zip(&all_chunks) {
        let tx = plain.transaction().unwrap();
        for c in cs {
            let blob: Vec<u8> = vectors[n].iter().flat_map(|x| x.to_le_bytes()).collect();
            tx.execute(
                "INSERT INTO chunks (path, text, vector) VALUES (?1, ?2, ?3)",
                rusqlite::params![p, c.text, blob],
            )
            .unwrap();
            n += 1;
        }
        tx.commit().unwrap();
    }
    let plain_time = t.elapsed();
    drop(plain);

    // Queries: four words of a random chunk (reference numbers among
    // them now and then: exact-match lookups).
    let queries: Vec<String> = (0..QUERIES)
        .map(|_| {
            let ws: Vec<String> = words(&texts[rng.below(texts.len())]).collect();
            (0..4)
                .map(|_| ws[rng.below(ws.len())].clone())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut lat = Vec::new();
    for mode in [SearchMode::Text, SearchMode::Vector, SearchMode::Hybrid] {
        let mut v = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let r = idx
                .search("bench", q, K, mode, Weights::default(), Some(&HashEmbedder))
                .await
                .unwrap();
            v.push(t.elapsed());
            assert_eq!(r.mode, mode);
            assert!(!r.hits.is_empty());
        }
        lat.push(stats(v));
    }
    let qwords: Vec<Vec<String>> = queries.iter().map(|q| words(q).collect()).collect();
    let time_ref = |f: &dyn Fn(usize)| {
        let v: Vec<Duration> = (0..queries.len())
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed()
            })
            .collect();
        stats(v)
    };
    let scan_t = time_ref(&|i| {
        std::hint::black_box(scan_text(&texts, &qwords[i]));
    });
    let scan_v = time_ref(&|i| {
        let q = hash_vec(&queries[i]);
        std::hint::black_box(scan_vectors(&vectors, &q));
    });
    let scan_h = time_ref(&|i| {
        let q = hash_vec(&queries[i]);
        std::hint::black_box((scan_text(&texts, &qwords[i]), scan_vectors(&vectors, &q)));
    });
    drop(idx);
    let size = file_size(&path);
    let plain_size = file_size(&ref_path);

    let total = FILES * SECTIONS;
    println!("\nindexing {total} chunks (chunking, hashing, FTS5, vector blobs; hash embedder):");
    println!(
        "  index_file: {:.2} s ({:.0} chunks/s), index file {:.1} MiB ({:.0} bytes a chunk)",
        index_time.as_secs_f64(),
        total as f64 / index_time.as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        size as f64 / total as f64
    );
    println!(
        "  reference, plain INSERTs of the same rows: {:.2} s, {:.1} MiB; ratio {:.1}x time, {:.2}x size",
        plain_time.as_secs_f64(),
        plain_size as f64 / (1 << 20) as f64,
        index_time.as_secs_f64() / plain_time.as_secs_f64(),
        size as f64 / plain_size as f64
    );
    println!("\nquery latency over {total} chunks, {QUERIES} queries, top {K} (p50 / p99):");
    let rows = [
        (
            "text (FTS5 BM25)",
            lat[0],
            scan_t,
            "linear scan of all texts",
        ),
        (
            "vector (blob scan in SQLite)",
            lat[1],
            scan_v,
            "in-memory Vec scan",
        ),
        ("hybrid", lat[2], scan_h, "both scans"),
    ];
    for (what, (p50, p99), (r50, r99), rname) in rows {
        println!(
            "  {what:<29} {} / {}   reference {rname}: {} / {}   ratio p50 {:.2}x",
            ms(p50),
            ms(p99),
            ms(r50),
            ms(r99),
            p50.as_secs_f64() / r50.as_secs_f64()
        );
    }

    // Local embedding throughput.
    let Some(model_dir) = std::env::var_os("IRONCLAW_MINILM_DIR") else {
        println!(
            "\nlocal embedding: skipped, IRONCLAW_MINILM_DIR is not set (scripts/fetch-minilm.sh)"
        );
        return;
    };
    let e = LocalEmbedder::load(Path::new(&model_dir)).expect("the model loads");
    let sample: Vec<String> = all_chunks
        .iter()
        .flatten()
        .take(256)
        .map(|c| c.indexed.clone())
        .collect();
    let tok = sample
        .iter()
        .map(|s| ironclaw_memory::chunk::tokens(s))
        .sum::<usize>()
        / sample.len();
    e.embed(&sample[..16]).await.unwrap(); // warm up
    let t = Instant::now();
    e.embed(&sample).await.unwrap();
    let batched = sample.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for s in &sample[..64] {
        e.embed(std::slice::from_ref(s)).await.unwrap();
    }
    let single = 64.0 / t.elapsed().as_secs_f64();
    let mut qlat = Vec::new();
    for q in &queries[..100] {
        let t = Instant::now();
        e.embed(std::slice::from_ref(q)).await.unwrap();
        qlat.push(t.elapsed());
    }
    let (q50, q99) = stats(qlat);
    println!("\nlocal embedding (all-MiniLM-L6-v2, candle, CPU):");
    println!(
        "  {batched:.1} chunks/s batched ({} chunks of ~{tok} cl100k tokens); reference one chunk per call: {single:.1} chunks/s ({:.2}x)",
        sample.len(),
        batched / single
    );
    println!(
        "  {total} chunks would take {:.0} s to embed; a 4-word query embeds in p50 {} / p99 {}",
        total as f64 / batched,
        ms(q50),
        ms(q99)
    );
}
