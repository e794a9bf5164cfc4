//! Bounded capture of a tool's output: pmpo's one capture policy
//! (`pmpo-process`: the first `limit` bytes and the last [`TAIL_BYTES`] are
//! kept, the rest only counted). What this adds for tools: the spill file
//! lives in the workspace, created through its confined writer.

use std::sync::Arc;

pub use pmpo_process::{Captured, DEFAULT_LIMIT, TAIL_BYTES};

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
    /// The runner's spill: created in the workspace (never through a link),
    /// reported by its workspace-relative name.
    pub fn into_runner(self) -> pmpo_process::Spill {
        let Spill { workspace, rel } = self;
        pmpo_process::Spill {
            name: rel.clone(),
            open: Arc::new(move || {
                workspace
                    .create_stream(&rel)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stream_is_kept_whole_in_its_workspace_spill_file_and_a_short_one_makes_none() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let workspace = pmpo_store::Workspace::open(dir.path()).unwrap();
        let spill = |name: &str| {
            Some(
                Spill {
                    workspace: workspace.clone(),
                    rel: format!("out/{name}"),
                }
                .into_runner(),
            )
        };
        let cap = pmpo_process::capture(&data[..], 1000, TAIL_BYTES, spill("long"));
        assert!(cap.truncated());
        assert_eq!(cap.whole_file.as_deref(), Some("out/long"));
        assert_eq!(std::fs::read(dir.path().join("out/long")).unwrap(), data);
        let short = pmpo_process::capture(&b"hi\n"[..], 1000, TAIL_BYTES, spill("short"));
        assert_eq!(short.whole_file, None);
        assert!(!dir.path().join("out/short").exists());
    }

    #[test]
    fn a_spill_file_is_never_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("whole")).unwrap();
        let workspace = pmpo_store::Workspace::open(dir.path()).unwrap();
        let spill = Spill {
            workspace,
            rel: "whole".into(),
        }
        .into_runner();
        let data = vec![b'x'; 5000];
        let cap = pmpo_process::capture(&data[..], 100, 0, Some(spill));
        assert_eq!(cap.whole_file, None);
        assert_eq!(cap.total, 5000);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }
}
