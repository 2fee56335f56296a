//! Documents cut into chunks for the `rag` layer: at most `max_chars`
//! characters each, overlapping by about `overlap`, cut at a paragraph,
//! sentence or word boundary where one is near, never inside a character.
//! Each chunk keeps its byte offsets in the document, so a search result
//! can point at its source.

/// One chunk: `text` is `document[start..end]` (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Most chunks one document may yield (an ingest of more is refused by the
/// caller before it allocates them).
pub const MAX_CHUNKS: usize = 100_000;

/// Cuts `document`. `max_chars` at least 16; `overlap` less than half of it.
pub fn chunk(document: &str, max_chars: usize, overlap: usize) -> Vec<Chunk> {
    let max_chars = max_chars.max(16);
    let overlap = overlap.min(max_chars / 2 - 1);
    // byte offset of every char boundary, and the end
    let bounds: Vec<usize> = document.char_indices().map(|(i, _)| i).chain(std::iter::once(document.len())).collect();
    let chars = bounds.len() - 1;
    let mut out = Vec::new();
    let mut from = 0usize; // in chars
    while from < chars && out.len() < MAX_CHUNKS {
        let hard_end = (from + max_chars).min(chars);
        let end = if hard_end == chars { chars } else { soft_end(document, &bounds, from, hard_end) };
        let text = &document[bounds[from]..bounds[end]];
        if !text.trim().is_empty() {
            out.push(Chunk { start: bounds[from], end: bounds[end], text: text.to_owned() });
        }
        if end == chars {
            break;
        }
        // the next chunk starts `overlap` back, but always moves forward
        from = end.saturating_sub(overlap).max(from + 1);
    }
    out
}

/// The best place to end a chunk in chars `(from, hard_end]`: after a
/// blank line, else after a sentence, else at a space, in its second half
/// (a chunk is never less than half full); else `hard_end`.
fn soft_end(document: &str, bounds: &[usize], from: usize, hard_end: usize) -> usize {
    let floor = from + (hard_end - from) / 2;
    let window = &document[bounds[floor]..bounds[hard_end]];
    let at = |byte: usize| bounds.partition_point(|b| *b < bounds[floor] + byte);
    if let Some(i) = window.rfind("\n\n") {
        return at(i + 2);
    }
    if let Some(i) = window.rfind(['.', '!', '?', '\n']) {
        return at(i + 1);
    }
    if let Some(i) = window.rfind(char::is_whitespace) {
        return at(i + 1).max(floor + 1);
    }
    hard_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_document_overlap_and_keep_their_offsets() {
        let doc = "First paragraph talks about cargo.\n\nSecond paragraph is about nextest and how it runs tests. It is fast!\n\nThird one: ünïcödé wörds here, and more words to fill the chunk up.";
        let chunks = chunk(doc, 60, 10);
        assert!(chunks.len() >= 3, "{chunks:#?}");
        for c in &chunks {
            assert_eq!(&doc[c.start..c.end], c.text);
            assert!(c.text.chars().count() <= 60, "{c:?}");
        }
        assert_eq!(chunks[0].start, 0);
        assert_eq!(chunks.last().map(|c| c.end), Some(doc.len()));
        // consecutive chunks touch or overlap: nothing is lost
        for w in chunks.windows(2) {
            assert!(w[1].start <= w[0].end, "{w:?}");
            assert!(w[1].start > w[0].start);
        }
        // the first cut is at the paragraph break
        assert!(chunks[0].text.ends_with("cargo.\n\n"), "{:?}", chunks[0].text);
    }

    #[test]
    fn awkward_input_is_cut_without_panics() {
        assert!(chunk("", 100, 10).is_empty());
        assert!(chunk("   \n\n  ", 100, 10).is_empty());
        let one_word = "x".repeat(1000);
        let c = chunk(&one_word, 100, 500);
        assert!(c.iter().all(|c| c.text.len() <= 100));
        assert_eq!(c.last().map(|c| c.end), Some(1000));
        let emoji = "🦀".repeat(300);
        for c in chunk(&emoji, 16, 3) {
            assert_eq!(&emoji[c.start..c.end], c.text);
        }
        assert_eq!(chunk("short", 1, 0).len(), 1, "tiny sizes are raised to 16");
    }
}
