//! Bounded line framing: splitting a byte stream into lines, parsing Server-Sent Events
//! (WHATWG HTML, "Server-sent events", event stream interpretation: `data:` fields joined with
//! `\n`, dispatched on a blank line, `:` comments ignored), and reading lines from a child's
//! pipe. Every buffer has a cap so a peer that never sends a newline cannot exhaust memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// A line longer than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong(pub usize);

/// Splits pushed byte chunks into lines (LF or CRLF), holding at most `max` bytes of an
/// unfinished line.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            max,
        }
    }

    /// Feeds a chunk; returns the lines it completed, without their terminators.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.len() + i > self.max {
                return Err(LineTooLong(self.max));
            }
            self.partial.extend_from_slice(&chunk[..i]);
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
            chunk = &chunk[i + 1..];
        }
        if self.partial.len() + chunk.len() > self.max {
            return Err(LineTooLong(self.max));
        }
        self.partial.extend_from_slice(chunk);
        Ok(lines)
    }

    /// The unterminated last line, if the stream ended in the middle of one.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.is_empty()).then_some(line)
    }
}

/// Why an event stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseError {
    /// A line exceeded the cap.
    TooLong(usize),
    /// A line was not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLong(max) => write!(f, "an event-stream line exceeds {max} bytes"),
            SseError::NotUtf8 => f.write_str("the event stream is not UTF-8"),
        }
    }
}

/// Parses `text/event-stream` into the `data` payloads of its events.
#[derive(Debug)]
pub(crate) struct SseParser {
    lines: LineSplitter,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser whose lines, and events, hold at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            lines: LineSplitter::new(max),
            data: String::new(),
            has_data: false,
        }
    }

    /// Feeds a chunk; returns the data of every event it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
        let lines = self
            .lines
            .push(chunk)
            .map_err(|LineTooLong(m)| SseError::TooLong(m))?;
        let mut events = Vec::new();
        for line in lines {
            if let Some(data) = self.line(&line)? {
                events.push(data);
            }
        }
        Ok(events)
    }

    /// At the end of the stream: the event still being built, if any. (The standard discards
    /// it; servers that omit the final blank line are common enough to accept it.)
    pub(crate) fn finish(&mut self) -> Result<Option<String>, SseError> {
        if let Some(line) = self.lines.finish() {
            if let Some(data) = self.line(&line)? {
                return Ok(Some(data));
            }
        }
        Ok(self.has_data.then(|| self.take()))
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<String>, SseError> {
        if line.is_empty() {
            return Ok(self.has_data.then(|| self.take()));
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        // `event`, `id` and `retry` do not matter to either protocol we read.
        if field == "data" {
            if self.data.len() + value.len() + 1 > self.lines.max {
                return Err(SseError::TooLong(self.lines.max));
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        Ok(None)
    }

    fn take(&mut self) -> String {
        self.has_data = false;
        std::mem::take(&mut self.data)
    }
}

/// Reads one line from `reader` into `line` (appending, without the terminator). Returns false
/// at end of input with nothing read. A line longer than `max` fails with [`LineTooLong`]
/// unless `truncate` is set, in which case the excess is read and discarded.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    truncate: bool,
) -> std::io::Result<Result<bool, LineTooLong>> {
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Ok(read_any));
        }
        read_any = true;
        let (take, used, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if take.len() > room && !truncate {
            return Ok(Err(LineTooLong(max)));
        }
        line.extend_from_slice(&take[..take.len().min(room)]);
        reader.consume(used);
        if complete {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Ok(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_handles_chunk_boundaries_and_crlf() {
        let mut s = LineSplitter::new(16);
        assert!(s.push(b"ab").unwrap().is_empty());
        assert_eq!(
            s.push(b"c\r\nde\nf").unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert_eq!(s.finish(), Some(b"f".to_vec()));
        assert_eq!(s.push(&[b'x'; 17]), Err(LineTooLong(16)));
    }

    #[test]
    fn sse_events_are_dispatched_on_blank_lines() {
        let mut p = SseParser::new(1024);
        let mut events = p
            .push(b": comment\nevent: x\ndata: one\n\ndata:two\ndata: three")
            .unwrap();
        events.extend(p.push(b"\n\ndata: [DONE]").unwrap());
        assert_eq!(events, vec!["one".to_string(), "two\nthree".to_string()]);
        assert_eq!(p.finish().unwrap(), Some("[DONE]".to_string()));
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn sse_rejects_oversized_and_non_utf8_lines() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789\n"), Err(SseError::TooLong(8)));
        let mut p = SseParser::new(64);
        assert_eq!(p.push(b"data: \xff\n"), Err(SseError::NotUtf8));
    }

    #[tokio::test]
    async fn read_line_bounds_and_truncates() {
        let mut r = tokio::io::BufReader::with_capacity(4, &b"hello\r\nworld-long\nend"[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut line, 8, false).await.unwrap(),
            Ok(true)
        );
        assert_eq!(line, b"hello");
        line.clear();
        assert_eq!(
            read_line(&mut r, &mut line, 5, true).await.unwrap(),
            Ok(true)
        );
        assert_eq!(line, b"world");
        line.clear();
        assert_eq!(
            read_line(&mut r, &mut line, 8, false).await.unwrap(),
            Ok(true)
        );
        assert_eq!(line, b"end");
        line.clear();
        assert_eq!(
            read_line(&mut r, &mut line, 8, false).await.unwrap(),
            Ok(false)
        );
        let mut r = &b"0123456789\n"[..];
        assert_eq!(
            read_line(&mut r, &mut line, 4, false).await.unwrap(),
            Err(LineTooLong(4))
        );
    }
}
