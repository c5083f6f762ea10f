//! Markdown into chunks of about [`ChunkConfig::target_tokens`] cl100k
//! tokens that follow the document's shape: a heading starts a new chunk,
//! paragraphs are kept whole when they fit, and a section longer than one
//! chunk is cut between lines with [`ChunkConfig::overlap_tokens`] of the
//! previous chunk repeated, so a fact at a cut is whole in one of them.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    pub target_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            target_tokens: 400,
            overlap_tokens: 80,
        }
    }
}

/// One chunk: 1-based inclusive line range of the file, the text those
/// lines hold, and what is indexed (the text under its heading path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start_line: usize,
    pub end_line: usize,
    pub text: String,
    /// `text` with the headings above it prepended when the chunk does
    /// not start with its own: what search matches and embeds.
    pub indexed: String,
    /// SHA-256 of `indexed`: an unchanged chunk keeps its vector.
    pub hash: String,
}

/// Tokens of `text` (cl100k, as the agent counts).
pub fn tokens(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

pub fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A line with its number and its token count.
struct Line<'a> {
    no: usize,
    text: &'a str,
    tokens: usize,
}

fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    ((1..=6).contains(&hashes) && line[hashes..].starts_with(' ')).then_some(hashes)
}

pub fn chunk_markdown(text: &str, cfg: ChunkConfig) -> Vec<Chunk> {
    let target = cfg.target_tokens.max(16);
    let overlap = cfg.overlap_tokens.min(target / 2);
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .map(|(i, t)| Line {
            no: i + 1,
            text: t,
            tokens: tokens(t) + 1,
        })
        .collect();
    let mut out = Vec::new();
    // The heading path at the current line: (level, text).
    let mut path: Vec<(usize, &str)> = Vec::new();
    let mut cur: Vec<&Line> = Vec::new();
    let mut cur_tokens = 0;
    // The heading path in force where `cur` starts.
    let mut cur_path: Vec<(usize, &str)> = Vec::new();
    let mut in_fence = false;
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if line.text.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let level = (!in_fence).then(|| heading_level(line.text)).flatten();
        if let Some(level) = level {
            // A heading closes the chunk before it.
            flush(&mut out, &cur, &cur_path);
            cur.clear();
            cur_tokens = 0;
            path.retain(|(l, _)| *l < level);
            path.push((level, line.text));
            cur_path = path.clone();
        }
        // The paragraph this line starts (up to the next blank line or
        // heading), kept whole when it fits in what is left.
        let para_end = if level.is_none() && !line.text.trim().is_empty() && !in_fence {
            let mut j = i + 1;
            while j < lines.len()
                && !lines[j].text.trim().is_empty()
                && heading_level(lines[j].text).is_none()
                && !lines[j].text.trim_start().starts_with("```")
            {
                j += 1;
            }
            j
        } else {
            i + 1
        };
        let para_tokens: usize = lines[i..para_end].iter().map(|l| l.tokens).sum();
        // A paragraph that fits in a chunk of its own goes whole into the
        // next one; a longer one fills this chunk line by line.
        if cur_tokens > 0 && cur_tokens + para_tokens > target && para_tokens <= target {
            cut(&mut out, &mut cur, &mut cur_tokens, &cur_path, overlap);
            cur_path = path.clone();
        }
        for l in &lines[i..para_end] {
            if cur_tokens > 0 && cur_tokens + l.tokens > target {
                // A paragraph longer than a chunk: cut between its lines.
                cut(&mut out, &mut cur, &mut cur_tokens, &cur_path, overlap);
                cur_path = path.clone();
            }
            cur.push(l);
            cur_tokens += l.tokens;
        }
        i = para_end;
    }
    flush(&mut out, &cur, &cur_path);
    out
}

/// Write `cur` as a chunk and start the next one with its tail of at
/// most `overlap` tokens.
fn cut<'a>(
    out: &mut Vec<Chunk>,
    cur: &mut Vec<&'a Line<'a>>,
    cur_tokens: &mut usize,
    path: &[(usize, &str)],
    overlap: usize,
) {
    flush(out, cur, path);
    let mut keep = 0;
    let mut t = 0;
    for l in cur.iter().rev() {
        // Never carry everything: the next chunk must move on.
        if t + l.tokens > overlap || keep + 1 == cur.len() {
            break;
        }
        t += l.tokens;
        keep += 1;
    }
    cur.drain(..cur.len() - keep);
    *cur_tokens = t;
}

fn flush(out: &mut Vec<Chunk>, lines: &[&Line], path: &[(usize, &str)]) {
    // Trim blank lines at both ends; a chunk of nothing is no chunk.
    let first = lines.iter().position(|l| !l.text.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.text.trim().is_empty());
    let (Some(a), Some(b)) = (first, last) else {
        return;
    };
    let lines = &lines[a..=b];
    let text = lines.iter().map(|l| l.text).collect::<Vec<_>>().join("\n");
    let starts_with_heading = heading_level(lines[0].text).is_some();
    let context: Vec<&str> = if starts_with_heading {
        // Its own heading is in the text; the ones above it are not.
        path.iter()
            .take(path.len().saturating_sub(1))
            .map(|(_, h)| *h)
            .collect()
    } else {
        path.iter().map(|(_, h)| *h).collect()
    };
    let indexed = if context.is_empty() {
        text.clone()
    } else {
        format!("{}\n{text}", context.join("\n"))
    };
    out.push(Chunk {
        start_line: lines[0].no,
        end_line: lines[lines.len() - 1].no,
        hash: hash(&indexed),
        text,
        indexed,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(target: usize, overlap: usize) -> ChunkConfig {
        ChunkConfig {
            target_tokens: target,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn headings_start_chunks_and_carry_their_path() {
        let doc = "# Home\n\nIntro line.\n\n## Garden\n\nTomatoes need water.\n\n## Car\n\nOil change in May.\n";
        let cs = chunk_markdown(doc, cfg(400, 80));
        assert_eq!(cs.len(), 3, "{cs:#?}");
        assert_eq!((cs[0].start_line, cs[0].end_line), (1, 3));
        assert_eq!((cs[1].start_line, cs[1].end_line), (5, 7));
        assert_eq!(cs[1].text, "## Garden\n\nTomatoes need water.");
        assert_eq!(cs[1].indexed, "# Home\n## Garden\n\nTomatoes need water.");
        assert_eq!(cs[2].indexed, "# Home\n## Car\n\nOil change in May.");
    }

    #[test]
    fn long_sections_are_cut_between_lines_with_overlap() {
        let body: String = (1..=60)
            .map(|i| format!("Line number {i} says something about topic {i}.\n"))
            .collect();
        let doc = format!("# Log\n{body}");
        let cs = chunk_markdown(&doc, cfg(100, 30));
        assert!(cs.len() >= 5, "{}", cs.len());
        for w in cs.windows(2) {
            // Overlap: the next chunk starts before the previous one ends.
            assert!(
                w[1].start_line <= w[0].end_line,
                "{:?} {:?}",
                w[0].start_line..=w[0].end_line,
                w[1].start_line..=w[1].end_line
            );
            assert!(w[1].start_line > w[0].start_line);
        }
        for c in &cs {
            assert!(tokens(&c.text) <= 130, "{} tokens", tokens(&c.text));
            assert!(c.indexed.starts_with("# Log"), "{}", c.indexed);
        }
        // Every line is in some chunk.
        let covered: std::collections::BTreeSet<usize> =
            cs.iter().flat_map(|c| c.start_line..=c.end_line).collect();
        assert!((1..=61).all(|l| covered.contains(&l)));
    }

    #[test]
    fn paragraphs_stay_whole_when_they_fit() {
        let para = |n: usize| {
            (0..6)
                .map(|i| format!("Paragraph {n} sentence {i} with several words in it."))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let doc = (0..8).map(para).collect::<Vec<_>>().join("\n\n");
        let cs = chunk_markdown(&doc, cfg(150, 0));
        for c in &cs {
            let first = c.text.lines().next().unwrap();
            assert!(
                first.ends_with("sentence 0 with several words in it."),
                "{first}"
            );
        }
    }

    #[test]
    fn headings_inside_code_fences_are_not_headings() {
        let doc = "# A\n```sh\n# not a heading\necho hi\n```\nafter\n";
        let cs = chunk_markdown(doc, cfg(400, 80));
        assert_eq!(cs.len(), 1, "{cs:#?}");
        assert_eq!(cs[0].end_line, 6);
    }

    #[test]
    fn empty_and_blank_documents_have_no_chunks() {
        assert!(chunk_markdown("", ChunkConfig::default()).is_empty());
        assert!(chunk_markdown("\n\n   \n", ChunkConfig::default()).is_empty());
    }
}
