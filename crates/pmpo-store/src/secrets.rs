//! Secrets stay with pmpo. The processes pmpo starts for a plan or a
//! refinement (stages, plugins, command checks, trigger commands) get an
//! environment without the variables that hold keys, and key values are
//! replaced by `[redacted]` in what pmpo writes. (A model endpoint that is a
//! local command, and a state provider's commands, are pmpo's own helpers
//! and keep the environment they were configured with.)
//!
//! A variable is a secret when its name ends in `_API_KEY`, `_TOKEN`,
//! `_SECRET` or `_PASSWORD`, is `PMPO_STORE`, is one that a model
//! endpoint's configuration reads its key from, or is named by a
//! `${env:NAME}` reference ([`register_key`], [`register_env_references`]).
//! The values redacted are those keys' values and the values of every secret
//! variable of pmpo's environment, except common words ([`is_redactable`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The text that stands where a key was.
pub const REDACTED: &str = "[redacted]";

/// Keys shorter than this are not redacted from text: a short value is a
/// common word, and replacing it everywhere would garble ordinary output.
/// Such a variable is still kept from stages.
pub const MIN_REDACTED_LEN: usize = 8;

/// The longest value that counts as a common word when made only of letters
/// (Ollama's documented placeholder key is `ollama`; others use `none`,
/// `placeholder` or `not-needed`).
const MAX_WORD_LEN: usize = 24;

const SECRET_SUFFIXES: &[&str] = &["_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

#[derive(Default)]
struct Known {
    names: BTreeSet<String>,
    values: BTreeSet<String>,
    /// What [`hidden_variables`] and [`secret_values`] found, until the next
    /// key is registered: pmpo's environment does not change while it runs,
    /// and reading it again for every stage and every text redacted cost
    /// more than a stage's own bookkeeping.
    found: Option<Arc<Found>>,
}

struct Found {
    /// The secret variables of pmpo's environment, kept from child processes.
    hidden: Vec<String>,
    /// The values to redact, longest first: the registered keys and the
    /// values of every secret variable in pmpo's environment (a stage may be
    /// handed one through `env_passthrough`, and print it).
    values: Vec<String>,
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    names: BTreeSet::new(),
    values: BTreeSet::new(),
    found: None,
});

fn known() -> std::sync::MutexGuard<'static, Known> {
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a key's value is used for redaction: not a common word. A value
/// shorter than [`MIN_REDACTED_LEN`], or a single word of letters (with `-`
/// or `_`), such as Ollama's placeholder key `ollama`, would otherwise be
/// replaced in ordinary text and in every model answer that says it.
pub fn is_redactable(value: &str) -> bool {
    let word = value.len() <= MAX_WORD_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_');
    value.len() >= MIN_REDACTED_LEN && !word
}

/// Records that `variable` holds a key (a model endpoint reads it, or a
/// `${env:NAME}` reference names it), with its value when set: the variable
/// is kept from every process pmpo starts, and the value is redacted from
/// what pmpo writes (unless it is a common word, see [`is_redactable`]).
pub fn register_key(variable: &str, value: Option<&str>) {
    let mut k = known();
    k.found = None;
    k.names.insert(variable.to_string());
    if let Some(v) = value.map(str::trim)
        && is_redactable(v)
    {
        k.values.insert(v.to_string());
    }
}

/// Registers every variable that a `${env:NAME}` reference in `text` names
/// (a trigger's webhook header, a configuration file), with its value from
/// pmpo's environment.
pub fn register_env_references(text: &str) {
    let mut rest = text;
    while let Some(at) = rest.find("${env:") {
        let after = &rest[at + "${env:".len()..];
        let Some(end) = after.find('}') else {
            break;
        };
        let name = &after[..end];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            register_key(name, std::env::var(name).ok().as_deref());
        }
        rest = &after[end..];
    }
}

/// Registers the `${env:NAME}` references a workspace keeps (the webhook
/// headers of its artifacts' triggers, its `pmpo.toml`), once per workspace
/// and process: whatever command runs there, a stage never sees those
/// variables, even when no trigger is loaded.
pub(crate) fn register_workspace_references(root: &std::path::Path) {
    static SEEN: Mutex<BTreeSet<std::path::PathBuf>> = Mutex::new(BTreeSet::new());
    if !SEEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(root.to_path_buf())
    {
        return;
    }
    let mut files = vec![root.join("pmpo.toml")];
    if let Ok(dirs) = std::fs::read_dir(root.join(".refiner/artifacts")) {
        files.extend(dirs.flatten().map(|d| d.path().join("state.json")));
    }
    for file in files {
        let Ok(mut f) = crate::open_own(&file, std::fs::OpenOptions::new().read(true)) else {
            continue;
        };
        let mut text = String::new();
        // A state file is small; a damaged or huge one is read only so far.
        let _ = std::io::Read::read_to_string(
            &mut std::io::Read::take(&mut f, 16 * 1024 * 1024),
            &mut text,
        );
        register_env_references(&text);
        if file.ends_with("pmpo.toml") {
            register_key_env_lines(&text);
        }
    }
}

/// Registers the variables named by `api_key_env = "NAME"` lines of a
/// `pmpo.toml`, so they are kept from stages even by a command that does not
/// load the model configuration (`--offline`, `execute` without AI stages).
fn register_key_env_lines(toml: &str) {
    for line in toml.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "api_key_env" {
            continue;
        }
        let name = value
            .split('#')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches(|c| c == '"' || c == '\'');
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            register_key(name, std::env::var(name).ok().as_deref());
        }
    }
}

/// Whether a variable of this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    is_secret_name_in(name, &known())
}

fn is_secret_name_in(name: &str, k: &Known) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "PMPO_STORE"
        || SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
        || k.names.contains(name)
}

/// The environment's secret variables and the values to redact, read once
/// until a key is registered.
fn found() -> Arc<Found> {
    let mut k = known();
    if let Some(f) = &k.found {
        return f.clone();
    }
    let mut hidden = Vec::new();
    let mut values: BTreeSet<String> = k.values.clone();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !is_secret_name_in(&name, &k) {
            continue;
        }
        if let Ok(value) = value.into_string()
            && is_redactable(value.trim())
        {
            values.insert(value.trim().to_string());
        }
        hidden.push(name);
    }
    // Longest first: a key that contains another is replaced whole.
    let mut values: Vec<String> = values.into_iter().collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let f = Arc::new(Found { hidden, values });
    k.found = Some(f.clone());
    f
}

/// The variables of pmpo's own environment a child process must not inherit.
/// (A stage that needs one lists it in `env_passthrough:`; see the `run` tool.)
pub fn hidden_variables() -> Vec<String> {
    found().hidden.clone()
}

/// Replaces every configured key value in `text` by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let found = found();
    let values = &found.values;
    if !values.iter().any(|v| text.contains(v.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for v in values {
        out = out.replace(v.as_str(), REDACTED);
    }
    Cow::Owned(out)
}

/// [`redact`] on bytes that may not be UTF-8 (a process's output).
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let found = found();
    let values = &found.values;
    let mut out = Vec::new();
    let mut redactor = Redactor::new(values);
    if !redactor.push(bytes, true, &mut out) {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(out)
}

/// A writer that redacts what passes through it, as [`redact`] does, for
/// text too large to hold whole (the results of a run of thousands of
/// stages): keys are replaced across write boundaries too. [`Redacting::finish`]
/// writes the bytes held back at the end.
pub struct Redacting<W: std::io::Write> {
    inner: W,
    found: Arc<Found>,
    pending: Vec<u8>,
    out: Vec<u8>,
}

impl<W: std::io::Write> Redacting<W> {
    pub fn new(inner: W) -> Self {
        Redacting {
            inner,
            found: found(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    fn pass(&mut self, piece: &[u8], last: bool) -> std::io::Result<()> {
        if self.found.values.is_empty() {
            return self.inner.write_all(piece);
        }
        let mut r = Redactor {
            values: &self.found.values,
            pending: std::mem::take(&mut self.pending),
        };
        self.out.clear();
        r.push(piece, last, &mut self.out);
        self.pending = r.pending;
        self.inner.write_all(&self.out)
    }

    /// Writes what was held back (the end of a key may still have come).
    pub fn finish(mut self) -> std::io::Result<W> {
        self.pass(&[], true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pass(buf, false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Redacts a stream piece by piece, holding back just enough bytes at the
/// end of each piece to catch a key split between two pieces.
struct Redactor<'a> {
    values: &'a [String],
    pending: Vec<u8>,
}

impl<'a> Redactor<'a> {
    fn new(values: &'a [String]) -> Self {
        Redactor {
            values,
            pending: Vec::new(),
        }
    }

    /// Appends the redacted bytes that are settled to `out`; returns whether
    /// anything was redacted.
    fn push(&mut self, piece: &[u8], last: bool, out: &mut Vec<u8>) -> bool {
        self.pending.extend_from_slice(piece);
        let buf = std::mem::take(&mut self.pending);
        let mut found = false;
        let mut at = 0;
        // The next place of each key at or after `at`: each search moves
        // forward only, so the piece is scanned once per key.
        let mut next: Vec<Option<usize>> = self
            .values
            .iter()
            .map(|v| find(&buf, v.as_bytes()))
            .collect();
        loop {
            let best = next
                .iter()
                .zip(self.values)
                .filter_map(|(p, v)| p.map(|p| (p, v.len())))
                .min_by_key(|(p, l)| (*p, std::cmp::Reverse(*l)));
            let Some((pos, len)) = best else { break };
            out.extend_from_slice(&buf[at..pos]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = pos + len;
            found = true;
            for (p, v) in next.iter_mut().zip(self.values) {
                if p.is_some_and(|p| p < at) {
                    *p = find(&buf[at..], v.as_bytes()).map(|q| q + at);
                }
            }
        }
        let longest = self.values.iter().map(String::len).max().unwrap_or(0);
        let hold = if last {
            0
        } else {
            longest.saturating_sub(1).min(buf.len() - at)
        };
        out.extend_from_slice(&buf[at..buf.len() - hold]);
        self.pending = buf[buf.len() - hold..].to_vec();
        found
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == first && &hay[i..i + needle.len()] == needle)
}

/// Redacts a workspace file that pmpo wrote (a stage's whole output, kept
/// when it outgrew memory), streamed: memory stays flat whatever its size.
/// The file is replaced atomically, and only when it holds a key.
pub fn redact_file(ws: &crate::Workspace, rel: &str) -> Result<bool, crate::StoreError> {
    use std::io::Read;
    let found = found();
    let values = &found.values;
    if values.is_empty() {
        return Ok(false);
    }
    let read_all = |sink: &mut dyn FnMut(&[u8], bool) -> std::io::Result<bool>| {
        let mut file = ws.open_own(rel, std::fs::OpenOptions::new().read(true))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut found = false;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| crate::StoreError::io("read", &ws.root().join(rel), e))?;
            found |= sink(&buf[..n], n == 0)
                .map_err(|e| crate::StoreError::io("redact", &ws.root().join(rel), e))?;
            if n == 0 {
                return Ok::<bool, crate::StoreError>(found);
            }
        }
    };
    // First look, then rewrite only a file that holds a key.
    let mut scan = Redactor::new(values);
    let mut scratch = Vec::new();
    let holds_key = read_all(&mut |piece, last| {
        scratch.clear();
        Ok(scan.push(piece, last, &mut scratch))
    })?;
    if !holds_key {
        return Ok(false);
    }
    let mut copy = ws.open_own(rel, std::fs::OpenOptions::new().read(true))?;
    ws.write_atomic_with(rel, crate::Durability::Relaxed, |w| {
        let mut redactor = Redactor::new(values);
        let mut buf = vec![0u8; 256 * 1024];
        let mut out = Vec::new();
        loop {
            let n = copy.read(&mut buf)?;
            out.clear();
            redactor.push(&buf[..n], n == 0, &mut out);
            w.write_all(&out)?;
            if n == 0 {
                return Ok(());
            }
        }
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_redaction() {
        assert!(is_secret_name("OPENAI_API_KEY"));
        assert!(is_secret_name("github_token"));
        assert!(is_secret_name("DB_PASSWORD"));
        assert!(is_secret_name("PMPO_STORE"));
        assert!(!is_secret_name("PATH"));
        assert!(!is_secret_name("TOKENIZER"));
        register_key("MY_MODEL_CREDENTIAL", Some("sk-unit-test-value-123"));
        register_key("OLLAMA_KEY_VAR", Some("ollama"));
        register_key("LONG_WORD_VAR", Some("placeholder"));
        assert!(is_secret_name("MY_MODEL_CREDENTIAL"));
        assert_eq!(
            redact("key=sk-unit-test-value-123; again sk-unit-test-value-123"),
            "key=[redacted]; again [redacted]"
        );
        // A common word is not redacted from ordinary text (nor from a model's answer).
        assert_eq!(
            redact("run ollama locally, a placeholder"),
            "run ollama locally, a placeholder"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_redacting_writer_writes_what_redact_gives_whatever_the_pieces() {
        register_key("UNIT_STREAM_KEY", Some("sk-stream-key-0042xyz"));
        let text = "a sk-stream-key-0042xyz b\n".repeat(50);
        for size in [1, 3, 7, 16, 1000] {
            let mut w = Redacting::new(Vec::new());
            for piece in text.as_bytes().chunks(size) {
                std::io::Write::write_all(&mut w, piece).unwrap();
            }
            let out = w.finish().unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), redact(&text), "{size}");
        }
    }

    #[test]
    fn env_references_are_registered() {
        register_env_references("Bearer ${env:UNIT_HOOK_AUTH} and ${env:bad name} ${env:");
        assert!(is_secret_name("UNIT_HOOK_AUTH"));
        assert!(!is_secret_name("bad name"));
    }

    #[test]
    fn a_key_split_between_two_pieces_is_still_redacted() {
        let values = vec!["sk-split-key-0001".to_string()];
        for cut in 0..40 {
            let text = b"0123456789abcdefsk-split-key-0001 tail sk-split-key-0001";
            let mut r = Redactor::new(&values);
            let mut out = Vec::new();
            r.push(&text[..cut.min(text.len())], false, &mut out);
            r.push(&text[cut.min(text.len())..], false, &mut out);
            r.push(b"", true, &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "0123456789abcdef[redacted] tail [redacted]",
                "cut at {cut}"
            );
        }
        register_key("UNIT_BYTES_KEY", Some("sk-bytes-key-0002"));
        assert_eq!(
            &*redact_bytes(b"\xff sk-bytes-key-0002 \x00"),
            b"\xff [redacted] \x00"
        );
    }

    #[test]
    fn a_file_is_redacted_in_place_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = crate::Workspace::open(dir.path()).unwrap();
        register_key("UNIT_FILE_KEY", Some("sk-file-key-0003"));
        let mut big = Vec::new();
        for i in 0..40_000 {
            big.extend_from_slice(format!("line {i} sk-file-key-0003\n").as_bytes());
        }
        std::fs::write(dir.path().join("out.txt"), &big).unwrap();
        assert!(redact_file(&ws, "out.txt").unwrap());
        let text = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
        assert!(!text.contains("sk-file-key-0003"));
        assert_eq!(text.matches("[redacted]").count(), 40_000);
        assert!(
            !redact_file(&ws, "out.txt").unwrap(),
            "nothing left to redact"
        );
    }
}
