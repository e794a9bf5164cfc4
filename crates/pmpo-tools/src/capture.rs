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
    /// The workspace-relative file that holds the whole stream, when it outgrew the
    /// head limit and the caller asked for it to be kept ([`Spill`]).
    pub whole_file: Option<String>,
}

/// Where a stream is kept whole once it outgrows the head limit: the path is
/// resolved and the file created only then, so a stage with little output
/// costs nothing more.
#[derive(Debug, Clone)]
pub struct Spill {
    pub workspace: pmpo_store::Workspace,
    /// The file, relative to the workspace (what is reported).
    pub rel: String,
}

impl Spill {
    fn create(&self) -> std::io::Result<std::fs::File> {
        self.workspace
            .create_stream(&self.rel)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
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
pub async fn read_capped<R: AsyncRead + Unpin>(reader: R, limit: usize) -> Captured {
    read_capped_spill(reader, limit, None).await
}

/// As [`read_capped`], and once the stream outgrows `limit`, writes all of it
/// (head included) to `spill`. If that file cannot be written, the stream is
/// still read to its end and `whole_file` stays `None`.
pub async fn read_capped_spill<R: AsyncRead + Unpin>(
    mut reader: R,
    limit: usize,
    spill: Option<Spill>,
) -> Captured {
    use std::io::Write as _;
    let mut out = Captured::default();
    let mut whole: Option<std::fs::File> = None;
    let mut spill_failed = false;
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
        if let Some(sp) = &spill
            && !spill_failed
        {
            if whole.is_none() && out.head.len() + chunk.len() > limit {
                match sp.create() {
                    Ok(mut f) => match f.write_all(&out.head) {
                        Ok(()) => whole = Some(f),
                        Err(_) => spill_failed = true,
                    },
                    Err(_) => spill_failed = true,
                }
            }
            if let Some(f) = whole.as_mut()
                && f.write_all(chunk).is_err()
            {
                whole = None;
                spill_failed = true;
            }
        }
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
    if let (Some(mut f), Some(sp)) = (whole, spill)
        && f.flush().is_ok()
    {
        drop(f);
        out.whole_file = Some(sp.rel);
    }
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
    async fn a_long_stream_is_kept_whole_in_its_spill_file_and_a_short_one_makes_none() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let workspace = pmpo_store::Workspace::open(dir.path()).unwrap();
        let spill = |name: &str| Spill {
            workspace: workspace.clone(),
            rel: format!("out/{name}"),
        };
        let cap = read_capped_spill(&data[..], 1000, Some(spill("long"))).await;
        assert!(cap.truncated());
        assert_eq!(cap.whole_file.as_deref(), Some("out/long"));
        assert_eq!(std::fs::read(dir.path().join("out/long")).unwrap(), data);
        let short = read_capped_spill(&b"hi\n"[..], 1000, Some(spill("short"))).await;
        assert_eq!(short.whole_file, None);
        assert!(!dir.path().join("out/short").exists());
    }

    #[tokio::test]
    async fn short_streams_are_kept_whole() {
        let cap = read_capped(&b"hello\nworld\n"[..], 1000).await;
        assert!(!cap.truncated());
        assert_eq!(cap.text(), "hello\nworld\n");
        assert_eq!(cap.last_line().as_deref(), Some("world"));
    }
}
