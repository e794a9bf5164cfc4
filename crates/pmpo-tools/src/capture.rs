//! Bounded capture of a process's output: the first `limit` bytes and the
//! last [`TAIL_BYTES`] are kept, the rest only counted, so a tool printing
//! gigabytes cannot exhaust memory.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes kept from the end of a stream that overflowed the head limit.
pub const TAIL_BYTES: usize = 64 * 1024;
/// Default head limit per stream.
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// What was kept of one output stream.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub head: Vec<u8>,
    /// The last bytes, only when the stream was longer than the head limit.
    pub tail: Vec<u8>,
    /// Every byte the stream produced.
    pub total: u64,
}

impl Captured {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Captured {
            head: bytes.to_vec(),
            tail: Vec::new(),
            total: bytes.len() as u64,
        }
    }

    /// Whether bytes were dropped from the middle.
    pub fn truncated(&self) -> bool {
        self.total > (self.head.len() + self.tail.len()) as u64
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

/// Reads a stream to its end, keeping at most `limit` bytes of head plus a tail.
pub async fn read_capped<R: AsyncRead + Unpin>(mut reader: R, limit: usize) -> Captured {
    let mut out = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    // The tail is a ring buffer once the head is full.
    let mut ring: Vec<u8> = Vec::new();
    let mut ring_start = 0usize;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.total += n as u64;
        let mut chunk = &buf[..n];
        if out.head.len() < limit {
            let take = chunk.len().min(limit - out.head.len());
            out.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        for &b in chunk {
            if ring.len() < TAIL_BYTES {
                ring.push(b);
            } else {
                ring[ring_start] = b;
                ring_start = (ring_start + 1) % TAIL_BYTES;
            }
        }
    }
    ring.rotate_left(ring_start);
    out.tail = ring;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_head_and_tail_and_counts_everything() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let cap = read_capped(&data[..], 1000).await;
        assert_eq!(cap.total, data.len() as u64);
        assert_eq!(cap.head, &data[..1000]);
        assert_eq!(cap.tail, &data[data.len() - TAIL_BYTES..]);
        assert!(cap.truncated());
        assert_eq!(cap.last_line().as_deref(), Some("299999"));
        assert!(cap.text().contains("bytes not kept"));
    }

    #[tokio::test]
    async fn short_streams_are_kept_whole() {
        let cap = read_capped(&b"hello\nworld\n"[..], 1000).await;
        assert!(!cap.truncated());
        assert_eq!(cap.text(), "hello\nworld\n");
        assert_eq!(cap.last_line().as_deref(), Some("world"));
    }
}
