//! File stamps: a shortcut to "same digest as recorded" for a file that has
//! not changed since its digest was taken, as git's index does.
//!
//! A stamp is the file's device, inode, size, modification and status-change
//! times (in ns) read right before its content was digested, with the digest
//! and the moment (`taken_ns`, the system clock read before the file's
//! metadata) the stamp was taken. A later digest of the same workspace path is
//! taken from the stamp only when the file's metadata is still exactly the
//! stamp's and the stamp is not "racy": both of its times are older than
//! `taken_ns` by more than the file system's timestamp resolution and clock
//! lag. Any write after the stamp was taken then gives the file a newer
//! status-change time (which no user can set back, unlike the modification
//! time), so a file whose metadata is unchanged is unchanged. Anything else
//! (no stamp, any difference, a racy stamp, an unreadable time) digests the
//! file again, and records a fresh stamp.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

use crate::FileDigest;

use super::ExecStore;

/// One stamp as stored (table `stamps`, one row per workspace-relative path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampRow {
    pub path: String,
    pub size: u64,
    pub blake3: String,
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// The system clock (ns since the epoch) read before the metadata was.
    pub taken_ns: i64,
}

/// How much older than `taken_ns` a stamp's times must be for the stamp to be
/// trusted, on a file system that records times finer than a millisecond:
/// the kernel stamps files with a clock that lags the system clock by up to a
/// tick (a few ms); a second leaves a wide margin.
pub const FINE_MARGIN_NS: i64 = 1_000_000_000;
/// The same on a file system whose times look coarse (whole milliseconds or
/// seconds; some keep only even seconds).
pub const COARSE_MARGIN_NS: i64 = 3_000_000_000;

/// A file's identity and times, as a stamp holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Meta {
    /// The metadata of a regular file (`None` for anything else).
    #[cfg(unix)]
    pub fn of(m: &Metadata) -> Option<Meta> {
        use std::os::unix::fs::MetadataExt;
        if !m.is_file() {
            return None;
        }
        Some(Meta {
            size: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: m
                .mtime()
                .checked_mul(1_000_000_000)?
                .checked_add(m.mtime_nsec())?,
            ctime_ns: m
                .ctime()
                .checked_mul(1_000_000_000)?
                .checked_add(m.ctime_nsec())?,
        })
    }

    /// Without inode numbers and status-change times nothing can be trusted.
    #[cfg(not(unix))]
    pub fn of(_m: &Metadata) -> Option<Meta> {
        None
    }
}

impl StampRow {
    fn meta(&self) -> Meta {
        Meta {
            size: self.size,
            dev: self.dev,
            ino: self.ino,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
        }
    }

    /// Whether the stamp was taken too soon after the file's last change to
    /// vouch for it: a write in the same clock tick could have left the
    /// same times.
    pub fn racy(&self) -> bool {
        let fine = |t: i64| t % 1_000_000 != 0;
        let margin = if fine(self.mtime_ns) || fine(self.ctime_ns) {
            FINE_MARGIN_NS
        } else {
            COARSE_MARGIN_NS
        };
        let limit = self.taken_ns.saturating_sub(margin);
        self.mtime_ns >= limit || self.ctime_ns >= limit
    }

    /// The digest this stamp vouches for, when the file's metadata `now` is
    /// exactly the stamp's and the stamp is not racy.
    pub fn vouches(&self, now: &Meta) -> Option<FileDigest> {
        (self.meta() == *now && !self.racy()).then(|| FileDigest {
            size: self.size,
            blake3: self.blake3.clone(),
        })
    }
}

/// The system clock in ns since the epoch (`None` before 1970 or past 2262).
fn clock_ns() -> Option<i64> {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(d.as_nanos()).ok()
}

/// Digests a file and stamps it: the clock, then the open file's metadata,
/// then its content. The stamp is `None` when the metadata changed while the
/// content was read, or is not a regular file's.
pub fn digest_and_stamp(rel: &str, abs: &Path) -> io::Result<(FileDigest, Option<StampRow>)> {
    let taken_ns = clock_ns();
    let mut file = File::open(abs)?;
    let before = file.metadata().ok().as_ref().and_then(Meta::of);
    let digest = crate::hash_reader(&mut file)?;
    let size = digest.size;
    let after = file.metadata().ok().as_ref().and_then(Meta::of);
    let stamp = match (taken_ns, before, after) {
        (Some(taken_ns), Some(m), Some(a)) if m == a && m.size == size => Some(StampRow {
            path: rel.to_string(),
            size,
            blake3: digest.blake3.clone(),
            dev: m.dev,
            ino: m.ino,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
            taken_ns,
        }),
        _ => None,
    };
    Ok((digest, stamp))
}

/// The digest of the workspace file `rel` (at `abs`): from its stamp when the
/// stamp vouches for it, else read in full and stamped again (the new stamp
/// is written in the store's open transaction). A store that cannot read or
/// write stamps only loses the shortcut.
pub fn digest(db: &mut dyn ExecStore, rel: &str, abs: &Path) -> io::Result<FileDigest> {
    let now = std::fs::metadata(abs)?;
    if let Some(now) = Meta::of(&now)
        && let Ok(Some(row)) = db.stamp(rel)
        && let Some(d) = row.vouches(&now)
    {
        return Ok(d);
    }
    let (d, stamp) = digest_and_stamp(rel, abs)?;
    if let Some(s) = stamp {
        let _ = db.put_stamp(&s);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mtime_ns: i64, ctime_ns: i64, taken_ns: i64) -> StampRow {
        StampRow {
            path: "a".into(),
            size: 1,
            blake3: "d".into(),
            dev: 1,
            ino: 2,
            mtime_ns,
            ctime_ns,
            taken_ns,
        }
    }

    #[test]
    fn a_stamp_vouches_only_for_the_same_metadata_and_when_not_racy() {
        let s = 1_000_000_000_000_000_007i64;
        let old = row(s, s, s + 2 * FINE_MARGIN_NS);
        assert!(!old.racy());
        let same = old.meta();
        assert_eq!(old.vouches(&same).unwrap().blake3, "d");
        for other in [
            Meta { size: 2, ..same },
            Meta { dev: 9, ..same },
            Meta { ino: 9, ..same },
            Meta {
                mtime_ns: s - 1,
                ..same
            },
            Meta {
                ctime_ns: s + 1,
                ..same
            },
        ] {
            assert!(old.vouches(&other).is_none(), "{other:?}");
        }
        // Changed in the tick the stamp was taken, or later: racy.
        for racy in [
            row(s, s, s),
            row(s, s, s + 5),
            row(s, s + 3 * FINE_MARGIN_NS, s + 2 * FINE_MARGIN_NS),
        ] {
            assert!(racy.racy() && racy.vouches(&racy.meta()).is_none());
        }
        // Coarse times need a wider margin.
        let c = 1_000_000_000_000_000_000i64;
        assert!(row(c, c, c + 2 * FINE_MARGIN_NS).racy());
        assert!(!row(c, c, c + COARSE_MARGIN_NS + 1).racy());
    }

    #[test]
    fn a_file_is_stamped_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let (d, s) = digest_and_stamp("f", &p).unwrap();
        assert_eq!(d, crate::hash_file(&p).unwrap());
        let s = s.unwrap();
        assert_eq!((s.size, s.blake3.as_str()), (5, d.blake3.as_str()));
        let now = Meta::of(&std::fs::metadata(&p).unwrap()).unwrap();
        assert_eq!(s.meta(), now);
        // Just written: racy, so it vouches for nothing yet.
        assert!(s.racy() && s.vouches(&now).is_none());
    }
}
