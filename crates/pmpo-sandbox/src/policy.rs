//! What a confined process may write: its declared outputs, its scratch
//! directory, the system temp directory, the character devices a shell
//! needs, and the user's cache directory.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// pmpo's own top-level directories in a workspace: never an output, never
/// watched (pmpo writes them while a stage runs).
pub const OWN_DIRS: &[&str] = &[".state", ".refiner", "logs"];

/// Part of the names of pmpo's temporary files.
pub const OWN_TEMP_MARK: &str = ".pmpo-tmp-";

/// One path the process may write to (beneath it, for a directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The writes allowed to one process.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Confine writes (false: `sandbox: false`, only `network: false` applies).
    pub confine_fs: bool,
    /// `network: false`: no TCP bind or connect.
    pub deny_network: bool,
    pub grants: Vec<Grant>,
    /// Workspace directories granted whole although they also hold files
    /// that are not declared (a declared file that does not exist yet, a
    /// glob's directory): their other files are watched by detection.
    pub watched: Vec<PathBuf>,
    /// Directories pmpo made so that a new output's own directory can be
    /// granted rather than the workspace (removed after the stage if empty).
    pub made_dirs: Vec<PathBuf>,
}

/// Character devices a shell and common tools write to.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/random",
    "/dev/urandom",
    "/dev/ptmx",
];
/// Directories of devices and shared memory.
const DEVICE_DIRS: &[&str] = &["/dev/pts", "/dev/shm"];

/// The user's cache directory: `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(v) if Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache")),
    }
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn normalize(pattern: &str) -> String {
    let p = pattern.replace('\\', "/");
    let p = p.trim_start_matches("./");
    p.trim_end_matches('/').to_string()
}

/// Whether a workspace-relative path is (inside) one of pmpo's own directories.
pub fn is_own(rel: &str) -> bool {
    let first = rel.split('/').next().unwrap_or("");
    OWN_DIRS.contains(&first) || rel.split('/').any(|c| c.contains(OWN_TEMP_MARK))
}

/// Why an output pattern cannot be granted, if it cannot: it names the
/// workspace itself or pmpo's own state, or leaves the workspace.
pub fn output_problem(pattern: &str) -> Option<String> {
    let p = normalize(pattern);
    if p.starts_with('/') {
        return Some("is an absolute path; outputs must be inside the workspace".into());
    }
    if p.split('/').any(|c| c == "..") {
        return Some("contains `..`; outputs must stay inside the workspace".into());
    }
    if p.split('/').all(|c| c.is_empty() || c == ".") {
        return Some("names the workspace itself; name the files or a directory inside it".into());
    }
    if is_own(&p) {
        return Some("is inside pmpo's own state (`.state/`, `.refiner/`, `logs/`); name files of the artifact instead".into());
    }
    if is_glob(&p)
        && let Ok(g) = GlobBuilder::new(&p).literal_separator(true).build()
    {
        let m = g.compile_matcher();
        let first = p.split('/').next().unwrap_or("");
        let first = globset::Glob::new(first).map(|g| g.compile_matcher()).ok();
        for own in OWN_DIRS {
            if m.is_match(own)
                || m.is_match(format!("{own}/x"))
                || first.as_ref().is_some_and(|f| f.is_match(own))
            {
                return Some(format!(
                    "matches pmpo's own `{own}/`; start the pattern with a directory of the artifact, such as `dist/*`"
                ));
            }
        }
    }
    None
}

/// The declared outputs of a stage, to tell declared paths from others.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    literals: Vec<String>,
    globs: Vec<(String, GlobMatcher)>,
}

impl Declared {
    pub fn new(patterns: &[String]) -> Declared {
        let mut d = Declared::default();
        for raw in patterns {
            let p = normalize(raw);
            if p.is_empty() {
                continue;
            }
            if is_glob(&p) {
                if let Ok(g) = GlobBuilder::new(&p).literal_separator(true).build() {
                    let prefix: Vec<&str> = p.split('/').take_while(|c| !is_glob(c)).collect();
                    d.globs.push((prefix.join("/"), g.compile_matcher()));
                }
            } else {
                d.literals.push(p);
            }
        }
        d
    }

    /// Whether a change at `rel` is one the outputs declare: the output
    /// itself, anything beneath a declared path, a glob's match, or a
    /// directory on the way to a declared path.
    pub fn covers(&self, rel: &str, is_dir: bool) -> bool {
        let under = |base: &str| rel == base || rel.starts_with(&format!("{base}/"));
        let above = |base: &str| base.starts_with(&format!("{rel}/"));
        for l in &self.literals {
            if under(l) || (is_dir && above(l)) {
                return true;
            }
        }
        for (prefix, m) in &self.globs {
            if m.is_match(rel) {
                return true;
            }
            // Beneath a directory the glob matches (`dist/*` matching `dist/sub`).
            let mut anc = Path::new(rel).parent();
            while let Some(a) = anc {
                let s = a.to_string_lossy();
                if s.is_empty() {
                    break;
                }
                if m.is_match(&*s) {
                    return true;
                }
                anc = a.parent();
            }
            if is_dir && (prefix.is_empty() || under(prefix) || above(prefix)) {
                return true;
            }
        }
        false
    }
}

/// Builds the policy of a stage whose declared outputs are `outputs` in the
/// workspace `root` (canonical). `scratch` is the stage's own temp directory.
pub fn for_outputs(
    root: &Path,
    outputs: &[String],
    scratch: Option<&Path>,
) -> Result<Policy, String> {
    let root = &std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut policy = Policy {
        confine_fs: true,
        ..Policy::default()
    };
    for raw in outputs {
        if let Some(why) = output_problem(raw) {
            return Err(format!("declared output `{raw}` {why}"));
        }
        let p = normalize(raw);
        if is_glob(&p) {
            let prefix: Vec<&str> = p.split('/').take_while(|c| !is_glob(c)).collect();
            let dir = policy.make_dirs(root, &prefix.join("/"), raw)?;
            policy.watch(dir);
            continue;
        }
        let abs = root.join(&p);
        match std::fs::symlink_metadata(&abs) {
            Ok(_) => {
                let real = std::fs::canonicalize(&abs).map_err(|_| {
                    format!("declared output `{raw}` is a broken symbolic link; remove it or point it inside the workspace")
                })?;
                if !real.starts_with(root) {
                    return Err(format!(
                        "declared output `{raw}` leads through a symbolic link to `{}`, outside the workspace; a stage may only write inside it",
                        real.display()
                    ));
                }
                let rel = real
                    .strip_prefix(root)
                    .unwrap_or(&real)
                    .to_string_lossy()
                    .into_owned();
                if rel.is_empty() || is_own(&rel) {
                    return Err(format!(
                        "declared output `{raw}` is a symbolic link to the workspace itself or pmpo's own state"
                    ));
                }
                policy.grants.push(Grant {
                    is_dir: real.is_dir(),
                    path: real,
                });
            }
            Err(_) => {
                // Not there yet: the kernel can only grant its directory.
                let parent = Path::new(&p)
                    .parent()
                    .map(|x| x.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = policy.make_dirs(root, &parent, raw)?;
                policy.watch(dir);
            }
        }
    }
    if let Some(s) = scratch {
        policy.grants.push(Grant {
            path: s.to_path_buf(),
            is_dir: true,
        });
    }
    policy.add_ambient(root);
    Ok(policy)
}

/// The policy of a check's command: its `writes:` list, like outputs.
pub fn for_writes(
    root: &Path,
    writes: &[String],
    scratch: Option<&Path>,
) -> Result<Policy, String> {
    for_outputs(root, writes, scratch).map_err(|e| e.replace("declared output", "`writes:` entry"))
}

/// The deepest existing directory at or above `rel` (inside the workspace,
/// never a symbolic link out of it).
fn nearest_existing(root: &Path, rel: &str, raw: &str) -> Result<PathBuf, String> {
    let mut cur = PathBuf::from(rel);
    loop {
        let abs = root.join(&cur);
        if abs.is_dir() {
            let real = std::fs::canonicalize(&abs).unwrap_or(abs);
            if !real.starts_with(root) {
                return Err(format!(
                    "declared output `{raw}` lies under `{}`, a symbolic link to `{}` outside the workspace",
                    cur.display(),
                    real.display()
                ));
            }
            return Ok(real);
        }
        if cur.components().next().is_none() || !cur.pop() {
            return Ok(root.to_path_buf());
        }
        if cur.components().all(|c| matches!(c, Component::CurDir)) {
            return Ok(root.to_path_buf());
        }
    }
}

impl Policy {
    /// Makes the directory `rel` (and those above it) where missing, so the
    /// grant can be that directory and not one above it.
    fn make_dirs(&mut self, root: &Path, rel: &str, raw: &str) -> Result<PathBuf, String> {
        let existing = nearest_existing(root, rel, raw)?;
        let target = root.join(rel);
        if rel.is_empty() || target == existing {
            return Ok(existing);
        }
        let below = target
            .strip_prefix(&existing)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut cur = existing.clone();
        for c in below.components() {
            cur.push(c);
            match std::fs::create_dir(&cur) {
                Ok(()) => self.made_dirs.push(cur.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && cur.is_dir() => {}
                // Cannot make it (a file in the way, no permission): grant above it.
                Err(_) => {
                    cur.pop();
                    return Ok(cur);
                }
            }
        }
        Ok(cur)
    }

    /// Removes the directories pmpo made that are still empty (deepest first).
    pub fn remove_made_dirs(dirs: &[PathBuf]) {
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }

    fn watch(&mut self, dir: PathBuf) {
        if !self.watched.contains(&dir) {
            self.watched.push(dir.clone());
        }
        self.grants.push(Grant {
            path: dir,
            is_dir: true,
        });
    }

    /// Adds the system temp directory, the devices and the cache directory,
    /// each unless it holds the workspace (that would grant the workspace).
    fn add_ambient(&mut self, root: &Path) {
        for g in ambient() {
            if g.is_dir && root.starts_with(&g.path) {
                continue;
            }
            if !self.grants.contains(g) {
                self.grants.push(g.clone());
            }
        }
    }
}

/// The temp, cache and device paths every confined process may write,
/// resolved once per process (they do not move while pmpo runs; one that
/// vanished grants nothing, see `Prepared::new`).
fn ambient() -> &'static [Grant] {
    static AMBIENT: std::sync::OnceLock<Vec<Grant>> = std::sync::OnceLock::new();
    AMBIENT.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = vec![std::env::temp_dir(), PathBuf::from("/tmp")];
        if let Some(c) = cache_dir() {
            let _ = std::fs::create_dir_all(&c);
            dirs.push(c);
        }
        dirs.extend(DEVICE_DIRS.iter().map(PathBuf::from));
        let mut grants: Vec<Grant> = Vec::new();
        for d in dirs {
            let real = std::fs::canonicalize(&d).unwrap_or(d);
            let g = Grant {
                path: real,
                is_dir: true,
            };
            if g.path.is_dir() && !grants.contains(&g) {
                grants.push(g);
            }
        }
        for f in DEVICES {
            if Path::new(f).exists() {
                grants.push(Grant {
                    path: PathBuf::from(f),
                    is_dir: false,
                });
            }
        }
        grants
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_state_and_the_root_are_never_outputs() {
        assert!(output_problem("/").is_some());
        assert!(output_problem(".").is_some());
        assert!(output_problem("*").is_some());
        assert!(output_problem("**").is_some());
        assert!(output_problem(".state/x").is_some());
        assert!(output_problem(".s*/x").is_some());
        assert!(output_problem("../x").is_some());
        assert!(output_problem("dist/*").is_none());
        assert!(output_problem("out.txt").is_none());
    }

    #[test]
    fn declared_covers_outputs_their_insides_and_the_way_to_them() {
        let d = Declared::new(&["out/a.txt".into(), "dist/*.png".into(), "gen".into()]);
        assert!(d.covers("out/a.txt", false));
        assert!(d.covers("out", true));
        assert!(!d.covers("out/b.txt", false));
        assert!(d.covers("dist/x.png", false));
        assert!(!d.covers("dist/x.txt", false));
        assert!(d.covers("gen/deep/file", false));
        assert!(!d.covers("other", false));
    }
}
