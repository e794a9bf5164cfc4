//! Real files for the check tests: a temp workspace and writers for PNG, JPEG
//! and GIF files built byte by byte (valid structure, real checksums).
#![allow(dead_code)]

use std::path::PathBuf;

use pmpo_checks::CheckOutcome;
use pmpo_store::Workspace;
use serde_json::{Map, Value};

pub struct Ws {
    pub dir: tempfile::TempDir,
    pub ws: Workspace,
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        Ws { dir, ws }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// Runs a check with parameters given as a JSON object.
    pub fn check(&self, name: &str, params: Value) -> CheckOutcome {
        let map: Map<String, Value> = match params {
            Value::Object(m) => m,
            _ => panic!("params must be an object"),
        };
        pmpo_checks::run_check(&self.ws, name, &map)
    }
}

pub fn pass(o: &CheckOutcome) {
    assert!(o.passed(), "expected pass: {} / {}", o.message, o.evidence);
}

/// The check could not look: `not_checked`, never passed nor failed.
#[allow(dead_code)]
pub fn unseen(o: &CheckOutcome, needle: &str) {
    assert_eq!(
        o.status,
        pmpo_checks::CheckStatus::NotChecked,
        "expected not_checked: {} / {}",
        o.message,
        o.evidence
    );
    assert!(
        o.message.contains(needle),
        "message {:?} should contain {needle:?}",
        o.message
    );
}

pub fn fail(o: &CheckOutcome, needle: &str) {
    assert!(
        o.status == pmpo_checks::CheckStatus::Failed,
        "expected failure: {} / {}",
        o.message,
        o.evidence
    );
    assert!(
        o.message.contains(needle),
        "message {:?} should contain {needle:?}",
        o.message
    );
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// zlib with stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(if i + 1 == chunks.len() { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    if chunks.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid RGB PNG of w x h pixels, all one colour.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    png_of(w, h, |_| [0x1d, 0x35, 0x57])
}

/// A valid RGB PNG, dark on its left half and white on its right (not blank).
#[allow(dead_code)]
pub fn png_two_colours(w: u32, h: u32) -> Vec<u8> {
    png_of(w, h, |x| {
        if x < w / 2 {
            [0x1d, 0x35, 0x57]
        } else {
            [0xff; 3]
        }
    })
}

fn png_of(w: u32, h: u32, colour: impl Fn(u32) -> [u8; 3]) -> Vec<u8> {
    // Each row: filter byte 0, then the pixels.
    let mut row = vec![0u8];
    for x in 0..w {
        row.extend_from_slice(&colour(x));
    }
    let raw: Vec<u8> = row.repeat(h as usize);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG skeleton: SOI, SOF0 with the size, EOI.
pub fn jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    out.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// A GIF89a header with the logical screen size, and its trailer.
pub fn gif(w: u16, h: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0]);
    out.push(0x3B);
    out
}
