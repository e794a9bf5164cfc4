//! The one capture policy: of each output stream the first `limit` bytes and
//! the last `tail` bytes are kept, every byte is counted, and (when asked)
//! the whole stream is written to a spill file once it outgrows the head. A
//! process printing gigabytes cannot exhaust memory.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;

/// Bytes kept from the end of a stream that overflowed the head limit (the default).
pub const TAIL_BYTES: usize = 64 * 1024;
/// Default head limit per stream.
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// What was kept of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub head: Vec<u8>,
    /// The last bytes, only when the stream was longer than the head limit.
    pub tail: Vec<u8>,
    /// Every byte the stream produced (also those read before the reading was
    /// abandoned, see [`crate::ProcessResult::note`]).
    pub total: u64,
    /// The name of the file that holds the whole stream, when it outgrew the
    /// head limit and the caller asked for it to be kept ([`Spill`]).
    pub whole_file: Option<String>,
}

impl Captured {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Captured {
            head: bytes.to_vec(),
            tail: Vec::new(),
            total: bytes.len() as u64,
            whole_file: None,
        }
    }

    /// Whether bytes were dropped from the middle.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
    }

    /// The bytes kept (head, then tail).
    pub fn kept(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.head.len() + self.tail.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.tail);
        v
    }

    /// The kept text (invalid UTF-8 replaced), with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.truncated() {
            let dropped = self.total - (self.head.len() + self.tail.len()) as u64;
            s.push_str(&format!("\n[... {dropped} bytes not kept ...]\n"));
        }
        s.push_str(&String::from_utf8_lossy(&self.tail));
        s
    }

    /// The last non-empty line of the stream, from what was kept.
    pub fn last_line(&self) -> Option<String> {
        let bytes: &[u8] = if self.tail.is_empty() {
            &self.head
        } else {
            &self.tail
        };
        let text = String::from_utf8_lossy(bytes);
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    }

    /// Whether the kept bytes look binary (contain NUL).
    pub fn looks_binary(&self) -> bool {
        self.head.contains(&0) || self.tail.contains(&0)
    }
}

/// Where a stream is kept whole once it outgrows the head limit. The file is
/// opened only then, so a process with little output costs nothing more.
/// `open` is the caller's (e.g. a confined create inside a workspace); `name`
/// is what [`Captured::whole_file`] reports.
#[derive(Clone)]
pub struct Spill {
    pub name: String,
    pub open: Arc<dyn Fn() -> std::io::Result<File> + Send + Sync>,
}

impl Spill {
    /// A spill file at a plain path, created (or truncated) when needed.
    pub fn to_path(path: impl Into<std::path::PathBuf>) -> Spill {
        let path = path.into();
        Spill {
            name: path.to_string_lossy().into_owned(),
            open: Arc::new(move || File::create(&path)),
        }
    }
}

impl fmt::Debug for Spill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spill").field("name", &self.name).finish()
    }
}

/// Keeps a stream by the policy, chunk by chunk.
pub(crate) struct Keeper {
    out: Captured,
    limit: usize,
    tail_limit: usize,
    ring: VecDeque<u8>,
    spill: Option<Spill>,
    whole: Option<File>,
    spill_failed: bool,
}

impl Keeper {
    pub(crate) fn new(limit: usize, tail_limit: usize, spill: Option<Spill>) -> Keeper {
        Keeper {
            out: Captured::default(),
            limit,
            tail_limit,
            ring: VecDeque::new(),
            spill,
            whole: None,
            spill_failed: false,
        }
    }

    pub(crate) fn push(&mut self, mut chunk: &[u8]) {
        self.out.total += chunk.len() as u64;
        if let Some(sp) = &self.spill
            && !self.spill_failed
        {
            if self.whole.is_none() && self.out.head.len() + chunk.len() > self.limit {
                // Opened once the head overflows: everything so far goes first.
                match (sp.open)() {
                    Ok(mut f) => match f.write_all(&self.out.head) {
                        Ok(()) => self.whole = Some(f),
                        Err(_) => self.spill_failed = true,
                    },
                    Err(_) => self.spill_failed = true,
                }
            }
            if let Some(f) = self.whole.as_mut()
                && f.write_all(chunk).is_err()
            {
                self.whole = None;
                self.spill_failed = true;
            }
        }
        if self.out.head.len() < self.limit {
            let take = chunk.len().min(self.limit - self.out.head.len());
            self.out.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        if self.tail_limit == 0 || chunk.is_empty() {
            return;
        }
        if chunk.len() >= self.tail_limit {
            self.ring.clear();
            self.ring.extend(&chunk[chunk.len() - self.tail_limit..]);
        } else {
            let over = (self.ring.len() + chunk.len()).saturating_sub(self.tail_limit);
            self.ring.drain(..over);
            self.ring.extend(chunk);
        }
    }

    pub(crate) fn finish(mut self) -> Captured {
        self.out.tail = self.ring.into_iter().collect();
        // A spill file that failed midway is not reported: it is not whole.
        if let (Some(mut f), Some(sp)) = (self.whole.take(), self.spill.take())
            && !self.spill_failed
            && f.flush().is_ok()
        {
            self.out.whole_file = Some(sp.name);
        }
        self.out
    }
}

/// Reads `reader` to its end by the capture policy (head `limit`, last
/// `tail` bytes, total, optional spill). If the spill file cannot be written
/// the stream is still read to its end and `whole_file` stays `None`.
pub fn capture(mut reader: impl Read, limit: usize, tail: usize, spill: Option<Spill>) -> Captured {
    let mut keeper = Keeper::new(limit, tail, spill);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => keeper.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    keeper.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: u32) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{i}\n").into_bytes()).collect()
    }

    #[test]
    fn keeps_head_and_tail_and_counts_everything() {
        let data = numbers(300_000);
        let cap = capture(&data[..], 1000, TAIL_BYTES, None);
        assert_eq!(cap.total, data.len() as u64);
        assert_eq!(cap.head, &data[..1000]);
        assert_eq!(cap.tail, &data[data.len() - TAIL_BYTES..]);
        assert!(cap.truncated());
        assert_eq!(cap.last_line().as_deref(), Some("299999"));
        assert!(cap.text().contains("bytes not kept"));
    }

    #[test]
    fn the_tail_is_right_when_chunks_are_small() {
        // One byte at a time through the ring.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let data = numbers(5_000);
        let cap = capture(Trickle(&data), 100, 50, None);
        assert_eq!(cap.head, &data[..100]);
        assert_eq!(cap.tail, &data[data.len() - 50..]);
        assert_eq!(cap.total, data.len() as u64);
    }

    #[test]
    fn no_tail_when_asked_for_none() {
        let data = numbers(10_000);
        let cap = capture(&data[..], 100, 0, None);
        assert_eq!(cap.head, &data[..100]);
        assert!(cap.tail.is_empty());
        assert!(cap.truncated());
    }

    #[test]
    fn a_long_stream_is_kept_whole_in_its_spill_file_and_a_short_one_makes_none() {
        let dir = tempfile::tempdir().unwrap();
        let data = numbers(200_000);
        let long = dir.path().join("long");
        let cap = capture(&data[..], 1000, TAIL_BYTES, Some(Spill::to_path(&long)));
        assert!(cap.truncated());
        assert_eq!(cap.whole_file.as_deref(), Some(long.to_str().unwrap()));
        assert_eq!(std::fs::read(&long).unwrap(), data);
        let short = dir.path().join("short");
        let cap = capture(&b"hi\n"[..], 1000, TAIL_BYTES, Some(Spill::to_path(&short)));
        assert_eq!(cap.whole_file, None);
        assert!(!short.exists());
    }

    #[test]
    fn a_spill_file_that_cannot_be_made_is_not_reported_and_the_stream_is_still_read() {
        let data = numbers(10_000);
        let spill = Spill {
            name: "nowhere".into(),
            open: Arc::new(|| Err(std::io::Error::other("refused"))),
        };
        let cap = capture(&data[..], 10, 10, Some(spill));
        assert_eq!(cap.whole_file, None);
        assert_eq!(cap.total, data.len() as u64);
    }

    #[test]
    fn short_streams_are_kept_whole_and_binary_is_seen() {
        let cap = capture(&b"hello\nworld\n"[..], 1000, TAIL_BYTES, None);
        assert!(!cap.truncated());
        assert_eq!(cap.text(), "hello\nworld\n");
        assert_eq!(cap.last_line().as_deref(), Some("world"));
        assert!(!cap.looks_binary());
        assert!(capture(&b"a\0b"[..], 1000, 0, None).looks_binary());
    }
}
