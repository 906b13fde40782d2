//! Bounded buffers for output fruix does not control: lines cut at a cap
//! (saying so) and tails that keep only the last lines, so that no command,
//! local or remote, can make fruix hold its whole output in memory.
//!
//! # Contract
//!
//! - [`LineSplitter`] splits a byte stream into lines. It keeps at most
//!   `max` bytes of the line being read; the rest of a longer line is
//!   counted, never kept, and the line is emitted with its first `max` bytes
//!   and a note saying how many bytes were cut. Every byte is looked at once:
//!   a long line arriving in many chunks costs time linear in its length.
//! - [`Tail`] keeps the last `max_lines` lines pushed and counts the others.
//!
//! Memory is therefore at most `max` bytes (plus the note) per splitter and
//! `max_lines` lines per tail.

use std::collections::VecDeque;

/// Splits a byte stream into lines of at most `max` bytes (see the module
/// docs).
#[derive(Debug)]
pub struct LineSplitter {
    line: Vec<u8>,
    max: usize,
    /// What sets `max`, named in the note on a cut line.
    key: Option<&'static str>,
    /// Bytes of the current line that were not kept.
    cut: u64,
}

impl LineSplitter {
    /// A splitter keeping at most `max` bytes of a line; `key`, when given,
    /// is the configuration key that sets `max`.
    pub fn new(max: usize, key: Option<&'static str>) -> Self {
        LineSplitter {
            line: Vec::new(),
            max,
            key,
            cut: 0,
        }
    }

    /// Feeds `data`, calling `emit` with every line it completes (without
    /// its newline).
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(end) = data.iter().position(|b| *b == b'\n') {
            self.keep(&data[..end]);
            self.emit(&mut emit);
            data = &data[end + 1..];
        }
        self.keep(data);
    }

    /// Emits the last line if it has no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.line.is_empty() || self.cut > 0 {
            self.emit(&mut emit);
        }
    }

    fn keep(&mut self, part: &[u8]) {
        let room = self.max.saturating_sub(self.line.len()).min(part.len());
        self.line.extend_from_slice(&part[..room]);
        self.cut += (part.len() - room) as u64;
    }

    fn emit(&mut self, emit: &mut impl FnMut(&[u8])) {
        if self.cut > 0 {
            let mut note = format!(
                " [line cut at {} bytes: {} more bytes dropped",
                self.max, self.cut
            );
            if let Some(key) = self.key {
                note.push_str(&format!("; the cap is {key}"));
            }
            note.push(']');
            self.line.extend_from_slice(note.as_bytes());
        }
        emit(&self.line);
        self.line.clear();
        self.cut = 0;
    }
}

/// The last lines of some output (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    lines: VecDeque<String>,
    max_lines: usize,
    /// Lines pushed out of the tail.
    dropped: u64,
}

impl Tail {
    /// A tail of the last `max_lines` lines.
    pub fn new(max_lines: usize) -> Self {
        Tail {
            lines: VecDeque::with_capacity(max_lines),
            max_lines,
            dropped: 0,
        }
    }

    /// Adds `line`, dropping the oldest one when the tail is full.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
            self.dropped += 1;
        }
        if self.max_lines > 0 {
            self.lines.push_back(line.to_string());
        } else {
            self.dropped += 1;
        }
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The last line, if any.
    pub fn last(&self) -> Option<&str> {
        self.lines.back().map(String::as_str)
    }

    /// How many earlier lines were dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept lines, oldest first, as owned strings.
    pub fn into_lines(self) -> Vec<String> {
        self.lines.into()
    }

    /// The kept lines joined by newlines and trimmed, after a note saying
    /// how many earlier lines were dropped, if any.
    pub fn text(&self) -> String {
        let kept = self.lines().collect::<Vec<_>>().join("\n");
        match self.dropped {
            0 => kept.trim().to_string(),
            n => format!("[earlier lines dropped: {n}]\n{}", kept.trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max, Some("output_max_line_bytes"));
        let mut seen = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |l| {
                seen.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        splitter.finish(|l| seen.push(String::from_utf8_lossy(l).into_owned()));
        seen
    }

    #[test]
    fn lines_are_split_across_chunks_and_flushed_at_the_end() {
        assert_eq!(split(100, &[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert_eq!(split(100, &[b"a\n"]), ["a"]);
        assert!(split(100, &[b""]).is_empty());
    }

    #[test]
    fn a_long_line_is_cut_and_says_so() {
        let seen = split(4, &[b"0123", b"456789\nok\n"]);
        assert_eq!(
            seen,
            [
                "0123 [line cut at 4 bytes: 6 more bytes dropped; the cap is output_max_line_bytes]",
                "ok"
            ]
        );
    }

    #[test]
    fn fifty_megabytes_without_a_newline_keep_only_the_cap() {
        let mut splitter = LineSplitter::new(1024, Some("output_max_line_bytes"));
        let chunk = vec![b'x'; 32 << 10];
        let mut emitted = Vec::new();
        for _ in 0..(50 << 20) / chunk.len() {
            splitter.push(&chunk, |l| emitted.push(l.to_vec()));
            assert!(
                splitter.line.capacity() <= 4096,
                "{}",
                splitter.line.capacity()
            );
        }
        assert!(emitted.is_empty(), "no newline yet");
        splitter.finish(|l| emitted.push(l.to_vec()));
        assert_eq!(emitted.len(), 1);
        let line = String::from_utf8(emitted.pop().unwrap()).unwrap();
        assert!(line.starts_with(&"x".repeat(1024)), "{}", &line[..50]);
        assert!(
            line.ends_with(&format!(
                "[line cut at 1024 bytes: {} more bytes dropped; the cap is output_max_line_bytes]",
                (50 << 20) - 1024
            )),
            "{}",
            &line[1000..]
        );
    }

    #[test]
    fn tail_keeps_the_last_lines_and_counts_the_rest() {
        let mut tail = Tail::new(2);
        for line in ["a", "b", "c"] {
            tail.push(line);
        }
        assert_eq!(tail.lines().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(tail.last(), Some("c"));
        assert_eq!(tail.dropped(), 1);
        assert_eq!(tail.text(), "[earlier lines dropped: 1]\nb\nc");
        assert_eq!(tail.into_lines(), ["b", "c"]);
    }
}
