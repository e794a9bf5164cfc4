//! Secrets stay with pmpo. The processes pmpo starts (stages, plugins,
//! command checks, trigger commands, provider commands) get an environment
//! without the variables that hold keys, and the key values pmpo was
//! configured with are replaced by `[redacted]` in what it logs.
//!
//! A variable is a secret when its name ends in `_API_KEY`, `_TOKEN`,
//! `_SECRET` or `_PASSWORD`, is `PMPO_STORE`, or is one that a model
//! endpoint's configuration reads its key from ([`register_key`]).

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The text that stands where a key was.
pub const REDACTED: &str = "[redacted]";

/// Keys shorter than this are not redacted from text: a short value (Ollama's
/// placeholder key is `ollama`) is a common word, and replacing it everywhere
/// would garble ordinary output. Such a variable is still kept from stages.
pub const MIN_REDACTED_LEN: usize = 8;

const SECRET_SUFFIXES: &[&str] = &["_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];

#[derive(Default)]
struct Known {
    names: BTreeSet<String>,
    values: BTreeSet<String>,
}

static KNOWN: Mutex<Known> = Mutex::new(Known {
    names: BTreeSet::new(),
    values: BTreeSet::new(),
});

fn known() -> std::sync::MutexGuard<'static, Known> {
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records that `variable` holds a key (a model endpoint reads it), with its
/// value when set: the variable is kept from every process pmpo starts, and
/// the value is redacted from what pmpo logs.
pub fn register_key(variable: &str, value: Option<&str>) {
    let mut k = known();
    k.names.insert(variable.to_string());
    if let Some(v) = value.map(str::trim)
        && v.len() >= MIN_REDACTED_LEN
    {
        k.values.insert(v.to_string());
    }
}

/// Whether a variable of this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "PMPO_STORE"
        || SECRET_SUFFIXES.iter().any(|s| upper.ends_with(s))
        || known().names.contains(name)
}

/// The variables of pmpo's own environment a child process must not inherit.
/// (A stage that needs one lists it in `env_passthrough:`; see the `run` tool.)
pub fn hidden_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| is_secret_name(k))
        .collect()
}

/// Replaces every configured key value in `text` by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let k = known();
    if !k.values.iter().any(|v| text.contains(v.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for v in &k.values {
        out = out.replace(v.as_str(), REDACTED);
    }
    Cow::Owned(out)
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
        assert!(is_secret_name("MY_MODEL_CREDENTIAL"));
        assert_eq!(
            redact("key=sk-unit-test-value-123; again sk-unit-test-value-123"),
            "key=[redacted]; again [redacted]"
        );
        // A short, common word is not redacted from ordinary text.
        assert_eq!(redact("run ollama locally"), "run ollama locally");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
