//! Text helpers shared by adapters: splitting long replies into chunks that fit a platform's
//! per-message **byte** limit (WeCom self-built apps take 2048 UTF-8 bytes, wecom-callback
//! reference §5.6 and §11.9), keeping fenced code blocks renderable in every chunk.
//!
//! # How [`split_by_bytes`] cuts
//!
//! A chunk is filled greedily up to the budget, then cut at the last point inside it of the
//! best kind available, in this order:
//! 1. a paragraph break: a run of two or more `\n` (the run is dropped);
//! 2. a line break: a single `\n` (dropped);
//! 3. a sentence end: a run of spaces/tabs after `.`, `!` or `?` (the run is dropped), or right
//!    after `。`, `！`, `？`, `；` (nothing dropped);
//! 4. any run of spaces/tabs (dropped);
//! 5. a UTF-8 character boundary (nothing dropped); never inside a character.
//!
//! A break at the very start of a chunk is content, not a cut point, so no chunk is empty.
//!
//! **Fences.** When a chunk ends inside a fenced code block (```` ``` ```` or `~~~`, up to three
//! spaces of indent), the splitter appends `\n` + the closing marker to it and starts the next
//! chunk with the opening line (marker + info string) + `\n`. These added bytes count toward the
//! limit. Balancing is skipped for a fence whose opening and closing lines together need more
//! than a quarter of the limit (the chunk would be mostly overhead); such text is split plainly.
//!
//! **What is preserved (tested):** remove the added fence lines from each chunk and you get
//! slices of the original text, in order, non-empty, starting at byte 0; between consecutive
//! slices, and after the last, lies only the dropped separator: empty, a run of `\n`, or a run of
//! spaces/tabs. Limits below [`MIN_MAX_BYTES`] are raised to it, so any character fits.

/// The smallest limit honoured: one 4-byte character must fit in a chunk.
pub const MIN_MAX_BYTES: usize = 4;

/// The length of `s` in UTF-8 bytes (what WeCom's limits count).
pub fn byte_len(s: &str) -> usize {
    s.len()
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    &s[..floor_boundary(s, max)]
}

/// Splits `text` into chunks of at most `max_bytes` bytes each (see the module docs for where
/// it cuts and what it guarantees). Empty text yields no chunks.
pub fn split_by_bytes(text: &str, max_bytes: usize) -> Vec<String> {
    plan(text, max_bytes)
        .iter()
        .map(|p| p.render(text))
        .collect()
}

/// The first chunk [`split_by_bytes`] would make of `text`, and the text the remaining chunks
/// are cut from (starting with the reopened fence line when the first chunk ends inside a code
/// block), so `head` plus the chunks of `rest` are exactly the chunks of `text`. For a message
/// that shows what fits and continues the rest elsewhere (a WeCom stream, then markdown).
pub fn split_head(text: &str, max_bytes: usize) -> (String, String) {
    let pieces = plan(text, max_bytes);
    let Some(first) = pieces.first() else {
        return (String::new(), String::new());
    };
    let head = first.render(text);
    let rest = match pieces.get(1) {
        None => String::new(),
        Some(next) => {
            let mut r = String::new();
            if let Some(reopen) = &next.reopen {
                r.push_str(reopen);
                r.push('\n');
            }
            r.push_str(&text[next.start..]);
            r
        }
    };
    (head, rest)
}

/// Like [`split_by_bytes`], but when more than one chunk results, each gets an ` (i/n)` marker
/// whose bytes count toward `max_bytes`. The marker is separated by a space, or by a newline
/// when the chunk ends with a fence line (so the fence still closes). If the limit is so small
/// that markers would take half of it, the chunks are returned without markers.
pub fn split_with_markers(text: &str, max_bytes: usize) -> Vec<String> {
    let max = max_bytes.max(MIN_MAX_BYTES);
    let plain = split_by_bytes(text, max);
    if plain.len() <= 1 {
        return plain;
    }
    // The marker length depends on the chunk count, which depends on the budget left after
    // the marker; start from the unmarked count and widen until the digit count is stable.
    let mut digits = decimal_digits(plain.len());
    loop {
        let reserve = marker_reserve(digits);
        if reserve * 2 > max {
            return plain;
        }
        let chunks = split_by_bytes(text, max - reserve);
        let n = chunks.len();
        if decimal_digits(n) <= digits {
            return chunks
                .into_iter()
                .enumerate()
                .map(|(i, chunk)| {
                    let sep = if ends_with_fence_line(&chunk) {
                        '\n'
                    } else {
                        ' '
                    };
                    format!("{chunk}{sep}({}/{n})", i + 1)
                })
                .collect();
        }
        digits = decimal_digits(n);
    }
}

/// Bytes a marker may need when the count has `digits` digits: separator, parentheses, slash.
fn marker_reserve(digits: usize) -> usize {
    4 + 2 * digits
}

fn decimal_digits(n: usize) -> usize {
    n.to_string().len()
}

fn ends_with_fence_line(chunk: &str) -> bool {
    chunk
        .rsplit('\n')
        .next()
        .is_some_and(|line| fence_line(line).is_some())
}

/// The largest character boundary of `s` that is `<= i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// An open fenced code block.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fence {
    /// `` ` `` or `~`.
    marker: u8,
    /// Length of the marker run (3 or more).
    count: usize,
    /// The info string (`rust`, `python title="x"`), trimmed.
    info: String,
}

impl Fence {
    fn open_line(&self) -> String {
        let mut line = String::from(char::from(self.marker)).repeat(self.count);
        line.push_str(&self.info);
        line
    }

    fn close_line(&self) -> String {
        String::from(char::from(self.marker)).repeat(self.count)
    }

    /// Whether re-opening and closing this fence is affordable within `max`.
    fn balanced_within(&self, max: usize) -> bool {
        // Two lines, each with its newline.
        let overhead = self.open_line().len() + self.close_line().len() + 2;
        overhead <= max / 4
    }
}

/// Recognises a fence line: up to three spaces, then three or more backticks or tildes, then an
/// info string (which may not contain a backtick for backtick fences).
fn fence_line(line: &str) -> Option<(u8, usize, &str)> {
    let indent = line.bytes().take_while(|&b| b == b' ').count();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let marker = *rest.as_bytes().first()?;
    if marker != b'`' && marker != b'~' {
        return None;
    }
    let count = rest.bytes().take_while(|&b| b == marker).count();
    if count < 3 {
        return None;
    }
    let info = rest[count..].trim();
    if marker == b'`' && info.contains('`') {
        return None;
    }
    Some((marker, count, info))
}

/// The fence state after rendering `body` line by line, starting from `state`.
fn advance(mut state: Option<Fence>, body: &str) -> Option<Fence> {
    for line in body.split('\n') {
        let Some((marker, count, info)) = fence_line(line) else {
            continue;
        };
        state = match state {
            None => Some(Fence {
                marker,
                count,
                info: info.to_owned(),
            }),
            Some(open) if marker == open.marker && count >= open.count && info.is_empty() => None,
            // A fence-looking line of another kind inside a block is code.
            Some(open) => Some(open),
        };
    }
    state
}

/// One output chunk: a slice of the original text plus the fence lines added around it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    start: usize,
    end: usize,
    reopen: Option<String>,
    close: Option<String>,
}

impl Piece {
    fn render(&self, text: &str) -> String {
        let body = &text[self.start..self.end];
        let mut out = String::with_capacity(
            body.len()
                + self.reopen.as_ref().map_or(0, |r| r.len() + 1)
                + self.close.as_ref().map_or(0, |c| c.len() + 1),
        );
        if let Some(reopen) = &self.reopen {
            out.push_str(reopen);
            out.push('\n');
        }
        out.push_str(body);
        if let Some(close) = &self.close {
            out.push('\n');
            out.push_str(close);
        }
        out
    }
}

/// Decides every chunk of `text` for `max_bytes`.
fn plan(text: &str, max_bytes: usize) -> Vec<Piece> {
    let max = max_bytes.max(MIN_MAX_BYTES);
    let mut pieces = Vec::new();
    let mut pos = 0;
    // The fence open at `pos`, as the previous chunk rendered it.
    let mut fence: Option<Fence> = None;
    while pos < text.len() {
        let reopen = fence
            .as_ref()
            .filter(|f| f.balanced_within(max))
            .map(Fence::open_line);
        let budget = max - reopen.as_ref().map_or(0, |r| r.len() + 1);
        if text.len() - pos <= budget {
            // The rest fits. It is not closed even if it ends inside a fence: an unbalanced
            // ending is the original text's, not ours.
            pieces.push(Piece {
                start: pos,
                end: text.len(),
                reopen,
                close: None,
            });
            break;
        }
        // Reserve room for a closing line if the chunk would end inside a fence; an earlier cut
        // can end inside a different fence, so repeat until the reservation covers it. The
        // reserve grows strictly and stays below max / 4, so this terminates.
        let mut reserve = 0;
        let (cut, skip, state, close) = loop {
            let (cut, skip) = find_cut(text, pos, budget - reserve);
            let state = advance(fence.clone(), &text[pos..cut]);
            let close = state
                .as_ref()
                .filter(|f| f.balanced_within(max))
                .map(Fence::close_line);
            let need = close.as_ref().map_or(0, |c| c.len() + 1);
            if cut - pos + need <= budget {
                break (cut, skip, state, close);
            }
            reserve = need;
        };
        pieces.push(Piece {
            start: pos,
            end: cut,
            reopen,
            close,
        });
        fence = state;
        pos = cut + skip;
    }
    pieces
}

/// Where to end a chunk that starts at `pos` and may hold `limit` bytes of the original text
/// (`pos + limit < text.len()`): returns the cut offset and how many separator bytes to drop.
fn find_cut(text: &str, pos: usize, limit: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let end = pos + limit;
    let (mut paragraph, mut line, mut sentence, mut space) = (None, None, None, None);
    let mut i = pos;
    // A separator may start at `end` itself: it is dropped, so the body still fits.
    while i <= end && i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                let run = bytes[i..].iter().take_while(|&&b| b == b'\n').count();
                if i > pos {
                    if run >= 2 {
                        paragraph = Some((i, run));
                    } else {
                        line = Some((i, run));
                    }
                }
                i += run;
            }
            b' ' | b'\t' => {
                let run = bytes[i..]
                    .iter()
                    .take_while(|&&b| b == b' ' || b == b'\t')
                    .count();
                if i > pos {
                    if matches!(bytes[i - 1], b'.' | b'!' | b'?') {
                        sentence = Some((i, run));
                    } else {
                        space = Some((i, run));
                    }
                }
                i += run;
            }
            b if b >= 0x80 => {
                let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
                let after = i + c.len_utf8();
                if matches!(c, '。' | '！' | '？' | '；') && after <= end {
                    sentence = Some((after, 0));
                }
                i = after;
            }
            _ => i += 1,
        }
    }
    paragraph
        .or(line)
        .or(sentence)
        .or(space)
        .unwrap_or_else(|| (floor_boundary(text, end), 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_head_gives_the_first_chunk_and_what_the_others_come_from() {
        assert_eq!(split_head("", 10), (String::new(), String::new()));
        assert_eq!(split_head("short", 10), ("short".into(), String::new()));
        let text = "aaa\n\nbbb\nccc ddd";
        let (head, rest) = split_head(text, 9);
        assert_eq!(head, "aaa");
        assert_eq!(rest, "bbb\nccc ddd");
        assert_eq!(
            std::iter::once(head)
                .chain(split_by_bytes(&rest, 9))
                .collect::<Vec<_>>(),
            split_by_bytes(text, 9)
        );
        // Cut inside a fence: the rest reopens it, so it renders on its own.
        let fenced = format!("```rust\n{}\n```", "let x = 1;\n".repeat(20));
        let (head, rest) = split_head(&fenced, 80);
        assert!(
            head.starts_with("```rust\n") && head.ends_with("\n```"),
            "{head}"
        );
        assert!(rest.starts_with("```rust\n"), "{rest}");
        assert_eq!(
            std::iter::once(head)
                .chain(split_by_bytes(&rest, 80))
                .collect::<Vec<_>>(),
            split_by_bytes(&fenced, 80)
        );
    }

    #[test]
    fn short_and_empty_texts() {
        assert_eq!(split_by_bytes("hello", 10), ["hello"]);
        assert_eq!(split_by_bytes("hello", 5), ["hello"]);
        assert!(split_by_bytes("", 10).is_empty());
        assert!(split_with_markers("", 10).is_empty());
        assert_eq!(split_with_markers("hello", 10), ["hello"]);
    }

    #[test]
    fn prefers_paragraph_then_line_then_sentence_then_space_then_char() {
        assert_eq!(split_by_bytes("aaa\n\nbbb\nccc", 9), ["aaa", "bbb\nccc"]);
        assert_eq!(split_by_bytes("aaa\nbbb ccc", 9), ["aaa", "bbb ccc"]);
        assert_eq!(split_by_bytes("One. Two three", 12), ["One.", "Two three"]);
        assert_eq!(split_by_bytes("你好。世界和平", 14), ["你好。", "世界和平"]);
        assert_eq!(split_by_bytes("aaa bbb ccc", 9), ["aaa bbb", "ccc"]);
        assert_eq!(split_by_bytes("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        // A paragraph run of three newlines is dropped whole.
        assert_eq!(split_by_bytes("aaa\n\n\nbbb", 5), ["aaa", "bbb"]);
        // A separator just past the budget still counts: it is dropped, not kept.
        assert_eq!(split_by_bytes("abcd\n\nefgh", 4), ["abcd", "efgh"]);
        // A break at the start of a chunk is content.
        assert_eq!(split_by_bytes("\n\nabcdef", 4), ["\n\nab", "cdef"]);
    }

    #[test]
    fn never_splits_inside_a_character() {
        assert_eq!(split_by_bytes("你好世界", 7), ["你好", "世界"]);
        assert_eq!(split_by_bytes("😀😀😀", 5), ["😀", "😀", "😀"]);
        assert_eq!(split_by_bytes("a😀b", 4), ["a", "😀", "b"]);
        // Limits below 4 are raised so a 4-byte character still fits.
        assert_eq!(split_by_bytes("😀😀", 1), ["😀", "😀"]);
        assert_eq!(truncate_utf8("你好", 5), "你");
        assert_eq!(truncate_utf8("你好", 6), "你好");
        assert_eq!(truncate_utf8("你好", 100), "你好");
        assert_eq!(truncate_utf8("😀", 3), "");
        assert_eq!(byte_len("你😀a"), 8);
    }

    #[test]
    fn fences_are_closed_and_reopened_within_the_limit() {
        let text = "Intro.\n\n```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\nlet d = 4;\nlet e = 5;\nlet f = 6;\n```\nOutro.";
        let chunks = split_by_bytes(text, 48);
        assert_eq!(
            chunks,
            [
                "Intro.",
                "```rust\nlet a = 1;\nlet b = 2;\nlet c = 3;\n```",
                "```rust\nlet d = 4;\nlet e = 5;\nlet f = 6;\n```",
                "Outro.",
            ]
        );
        for chunk in &chunks {
            assert!(chunk.len() <= 48);
            assert_eq!(advance(None, chunk), None, "{chunk:?}");
        }
        // Tilde fences with longer markers close with the same marker.
        let tilde = format!("~~~~\n{}~~~~", "line\n".repeat(10));
        let chunks = split_by_bytes(&tilde, 40);
        assert!(chunks.len() > 1);
        assert!(chunks[0].ends_with("\n~~~~") && chunks[1].starts_with("~~~~\n"));
        for chunk in &chunks {
            assert!(chunk.len() <= 40);
            assert_eq!(advance(None, chunk), None, "{chunk:?}");
        }
    }

    #[test]
    fn fences_too_long_to_balance_are_split_plainly() {
        let text = format!("```{}\n{}\n```", "x".repeat(30), "code ".repeat(20));
        let chunks = split_by_bytes(&text, 40);
        assert!(chunks.iter().all(|c| c.len() <= 40));
        assert!(chunks.iter().skip(1).all(|c| !c.starts_with("```x")));
    }

    #[test]
    fn markers_count_toward_the_limit() {
        assert_eq!(
            split_with_markers("aaaa bbbb cccc", 12),
            ["aaaa (1/3)", "bbbb (2/3)", "cccc (3/3)"]
        );
        // Ten or more chunks need two-digit markers; the budget shrinks accordingly.
        let text = "word ".repeat(40);
        let chunks = split_with_markers(text.trim_end(), 16);
        let n = chunks.len();
        assert!(n >= 10);
        for (i, chunk) in chunks.iter().enumerate() {
            assert!(chunk.len() <= 16, "{chunk:?}");
            assert!(chunk.ends_with(&format!(" ({}/{n})", i + 1)), "{chunk:?}");
        }
        // A chunk ending in a fence gets its marker on a new line.
        let code = format!("```\n{}```", "line\n".repeat(12));
        for chunk in split_with_markers(&code, 40) {
            assert!(chunk.len() <= 40);
            let (body, _) = chunk.rsplit_once('(').unwrap();
            assert!(body.ends_with("```\n"), "{chunk:?}");
        }
        // Markers that would take half the limit are left out.
        assert_eq!(split_with_markers("abcdefgh", 4), ["abcd", "efgh"]);
    }

    #[test]
    fn ten_thousand_bytes_of_cjk_at_2048() {
        let sentence = "企业微信消息按字节拆分测试。";
        let text = sentence.repeat(10_000 / sentence.len() + 1);
        assert!(text.len() >= 10_000);
        let chunks = split_by_bytes(&text, 2048);
        // 48 sentences of 42 bytes (2016 bytes) fit in 2048; 239 sentences make 5 chunks.
        assert_eq!(chunks.len(), 5);
        let (last, full) = chunks.split_last().unwrap();
        assert!(full.iter().all(|c| c.len() == 48 * sentence.len()));
        assert!(last.len() <= 2048);
        // CJK sentence cuts drop nothing, so the chunks rejoin exactly.
        assert_eq!(chunks.concat(), text);
        assert!(chunks.iter().all(|c| c.ends_with('。')));
        // Without punctuation the cut falls on a character boundary and still rejoins.
        let plain = "测".repeat(4000);
        let chunks = split_by_bytes(&plain, 2048);
        assert!(chunks.iter().all(|c| c.len() <= 2048));
        assert_eq!(chunks.concat(), plain);
        for marked in split_with_markers(&plain, 2048) {
            assert!(marked.len() <= 2048);
        }
    }

    /// A deterministic xorshift generator for the property tests (no extra dependency).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    fn random_text(rng: &mut Rng) -> String {
        const TOKENS: &[&str] = &[
            "word",
            "longerword",
            "a",
            "x",
            " ",
            "  ",
            "\t",
            "\n",
            "\n\n",
            "\n\n\n",
            ". ",
            "! ",
            "? ",
            "你好",
            "世界",
            "。",
            "！",
            "；",
            "😀",
            "👍🏽",
            "é",
            "\n```rust\n",
            "\n```\n",
            "\n~~~\n",
            "\n````py\n",
            "\n````\n",
            "```",
            "code();",
            "    indented",
        ];
        let len = (rng.next() % 120) as usize;
        (0..len).map(|_| rng.pick(TOKENS)).collect()
    }

    /// The documented guarantees, checked on one text and limit.
    fn check_invariants(text: &str, max: usize) {
        let max_eff = max.max(MIN_MAX_BYTES);
        let pieces = plan(text, max);
        let chunks = split_by_bytes(text, max);
        assert_eq!(chunks.len(), pieces.len());
        let mut expected_start = 0;
        let mut carried: Option<Fence> = None;
        for (i, (piece, chunk)) in pieces.iter().zip(&chunks).enumerate() {
            assert!(
                chunk.len() <= max_eff,
                "chunk {i} has {} > {max_eff}: {chunk:?}",
                chunk.len()
            );
            assert!(piece.end > piece.start, "empty chunk {i}");
            // Removing the added fence lines leaves exactly the original slice.
            let mut body = chunk.as_str();
            if let Some(r) = &piece.reopen {
                body = body
                    .strip_prefix(r.as_str())
                    .and_then(|b| b.strip_prefix('\n'))
                    .unwrap();
            }
            if let Some(c) = &piece.close {
                body = body
                    .strip_suffix(c.as_str())
                    .and_then(|b| b.strip_suffix('\n'))
                    .unwrap();
            }
            assert_eq!(body, &text[piece.start..piece.end]);
            // The gap before this slice is exactly one dropped separator.
            let gap = &text[expected_start..piece.start];
            assert!(is_separator(gap), "gap {gap:?} before chunk {i}");
            assert!(i > 0 || piece.start == 0);
            expected_start = piece.end;
            // Every chunk but the last renders with no balanced fence left open. Chunks that
            // start inside a fence too long to balance are exempt: they are split plainly.
            let starts_plain = carried.as_ref().is_none_or(|f| f.balanced_within(max_eff));
            if i + 1 < pieces.len() && starts_plain {
                let open = advance(None, chunk);
                assert!(
                    open.as_ref().is_none_or(|f| !f.balanced_within(max_eff)),
                    "chunk {i} leaves {open:?} open: {chunk:?}"
                );
            }
            carried = advance(carried, &text[piece.start..piece.end]);
        }
        assert!(is_separator(&text[expected_start..]));
        assert_eq!(text.is_empty(), chunks.is_empty());

        let marked = split_with_markers(text, max);
        if marked == chunks {
            // No markers: a single chunk, or a limit too small to afford them.
            assert!(
                chunks.len() <= 1 || max_eff < 64,
                "markers missing at {max_eff}"
            );
        } else {
            let n = marked.len();
            // The reserve may have been sized for one more digit than the final count has.
            let unmarked = [decimal_digits(n), decimal_digits(n) + 1]
                .into_iter()
                .map(|d| split_by_bytes(text, max_eff - marker_reserve(d)))
                .find(|plain| plain.len() == n)
                .expect("an unmarked split with the same count");
            for (i, (chunk, plain)) in marked.iter().zip(&unmarked).enumerate() {
                assert!(chunk.len() <= max_eff, "marked chunk {chunk:?} > {max_eff}");
                let marker = format!("({}/{n})", i + 1);
                let rest = chunk.strip_suffix(&marker).expect("marker at the end");
                let rest = rest
                    .strip_suffix([' ', '\n'])
                    .expect("separator before the marker");
                assert_eq!(rest, plain);
            }
        }
    }

    fn is_separator(gap: &str) -> bool {
        gap.is_empty()
            || gap.bytes().all(|b| b == b'\n')
            || gap.bytes().all(|b| b == b' ' || b == b'\t')
    }

    #[test]
    fn property_chunks_fit_and_rejoin() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..400 {
            let text = random_text(&mut rng);
            for max in [1, 4, 5, 7, 13, 32, 47, 64, 100, 257, 2048] {
                check_invariants(&text, max);
            }
        }
    }
}
