//! Recovery: error classes with hints, retry backoff, circuit breakers.

use std::time::Duration;

use pmpo_plan::{Backoff, Retry};
use pmpo_store::db::{AdapterRow, DbError, ExecStore};
use pmpo_store::states::FailureKind;

mod policy;

pub use policy::{Halt, History, NOT_RETRIED, Next, Policy, Step, Tool, needs_gate, next_step};

/// A recognized kind of failure and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: FailureKind,
    pub hint: String,
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let i = text.find(marker)?;
    Some(text[i + marker.len()..].trim_start())
}

fn first_token(text: &str) -> String {
    text.trim_matches(|c: char| c == '\'' || c == '"' || c == '`')
        .split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ',' || c == ')')
        .find(|s| !s.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Recognizes the common failure classes from a failed process's stderr and exit code.
pub fn classify(stderr: &str, exit_code: Option<i32>) -> Option<Classified> {
    let c = |kind, hint: String| Some(Classified { kind, hint });
    if let Some(rest) = after(stderr, "ModuleNotFoundError: No module named") {
        let m = first_token(rest);
        return c(
            FailureKind::MissingDependency,
            format!(
                "the Python module `{m}` is missing: install it (e.g. `pip install {m}`) and retry; pmpo never installs anything unless the plan does"
            ),
        );
    }
    if let Some(rest) = after(stderr, "Cannot find module") {
        let m = first_token(rest);
        return c(
            FailureKind::MissingDependency,
            format!(
                "the Node module `{m}` is missing: install it (e.g. `npm install {m}`) and retry"
            ),
        );
    }
    if exit_code == Some(127)
        || stderr.contains("command not found")
        || stderr.contains(": not found")
    {
        let cmd = stderr
            .lines()
            .find(|l| l.contains("not found"))
            .and_then(|l| l.split(':').rev().nth(1))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "a command".into());
        return c(
            FailureKind::MissingDependency,
            format!("`{cmd}` was not found: install it or put it on PATH, then retry"),
        );
    }
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("connection refused") || lower.contains("econnrefused") {
        let addr = stderr
            .split(|ch: char| {
                ch.is_whitespace() || ch == '(' || ch == ')' || ch == ',' || ch == '\'' || ch == '"'
            })
            .map(|t| t.trim_end_matches(['.', ']', ';']))
            .find(|t| {
                t.contains(':')
                    && t.rsplit(':')
                        .next()
                        .is_some_and(|p| !p.is_empty() && p.chars().all(|d| d.is_ascii_digit()))
            })
            .map(str::to_string);
        return c(
            FailureKind::ServiceUnavailable,
            match addr {
                Some(a) => format!(
                    "nothing is listening at {a}: start the service (and check its address), then retry"
                ),
                None => {
                    "a service refused the connection: start the service (and check its address), then retry"
                        .into()
                }
            },
        );
    }
    if lower.contains("permission denied")
        || lower.contains("eacces")
        || lower.contains("operation not permitted")
    {
        let path = stderr
            .lines()
            .find(|l| l.to_ascii_lowercase().contains("permission denied"))
            .and_then(|l| {
                l.split(['\'', '"', '`'])
                    .nth(1)
                    .map(str::to_string)
                    .or_else(|| l.split(':').nth(1).map(|s| s.trim().to_string()))
            })
            .filter(|p| !p.is_empty());
        return c(
            FailureKind::PermissionDenied,
            match path {
                Some(p) => format!("permission denied on `{p}`: fix its permissions (e.g. chmod) or run with an account that may use it"),
                None => "permission denied: check the permissions of the files and commands the stage uses".into(),
            },
        );
    }
    if lower.contains("memoryerror")
        || lower.contains("out of memory")
        || lower.contains("cannot allocate memory")
    {
        return c(
            FailureKind::OutOfMemory,
            "the process ran out of memory: give it less data or more memory".into(),
        );
    }
    if lower.contains("version")
        && (lower.contains("requires")
            || lower.contains("incompatible")
            || lower.contains("mismatch")
            || lower.contains("unsupported"))
    {
        return c(FailureKind::VersionIncompatibility, "a dependency has the wrong version: install the version the stage needs (see stderr), then retry".into());
    }
    None
}

/// How long to wait before attempt `next` (2 for the first retry).
pub fn backoff_delay(retry: &Retry, next: u32, salt: u64) -> Duration {
    let initial = retry.initial.map_or(Duration::from_secs(1), |t| t.0);
    let max = retry.max.map_or(Duration::from_secs(60), |t| t.0);
    let base = match retry.backoff {
        Backoff::Fixed => initial,
        Backoff::Exponential => initial.saturating_mul(1u32 << (next.saturating_sub(2)).min(20)),
    }
    .min(max);
    if !retry.jitter {
        return base;
    }
    // +-50%, from a hash of the stage's salt and the attempt (no RNG state to
    // carry, no clock: the same stage and attempt wait the same time).
    let h = blake3::hash(format!("{salt}-{next}").as_bytes());
    let unit = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) as f64 / u16::MAX as f64;
    base.mul_f64(0.5 + unit).min(max)
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub threshold: u32,
    /// How long it stays open before one trial call.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// An adapter's breaker, as the store writes it (`adapters.breaker_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    Open,
    /// The cool-down passed: one trial call decides.
    HalfOpen,
}

impl Breaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "CLOSED",
            Breaker::Open => "OPEN",
            Breaker::HalfOpen => "HALF_OPEN",
        }
    }

    /// Reads the written form; anything else is closed (a breaker that
    /// cannot be read never blocks).
    pub fn parse(text: &str) -> Breaker {
        match text {
            "OPEN" => Breaker::Open,
            "HALF_OPEN" => Breaker::HalfOpen,
            _ => Breaker::Closed,
        }
    }
}

/// Whether a call may go to the adapter now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// The cool-down passed: one trial call.
    HalfOpen,
    /// Open until this time (RFC 3339).
    Open(String),
}

fn parse_time(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// Checks (and, when the cool-down passed, half-opens) an adapter's breaker.
pub fn gate(db: &mut dyn ExecStore, adapter: &str, kind: &str) -> Result<Gate, DbError> {
    let now = chrono::Utc::now();
    let Some(mut row) = db.adapter(adapter)? else {
        db.touch_adapter(adapter, kind, &pmpo_store::now_rfc3339())?;
        return Ok(Gate::Closed);
    };
    match Breaker::parse(&row.breaker_state) {
        Breaker::Open => {
            let until = row.opened_until.as_deref().and_then(parse_time);
            if until.is_some_and(|u| now < u) {
                return Ok(Gate::Open(row.opened_until.clone().unwrap_or_default()));
            }
            row.breaker_state = Breaker::HalfOpen.as_str().into();
            row.updated_at = pmpo_store::now_rfc3339();
            db.put_adapter(&row)?;
            Ok(Gate::HalfOpen)
        }
        Breaker::HalfOpen => Ok(Gate::HalfOpen),
        Breaker::Closed => Ok(Gate::Closed),
    }
}

/// Failure kinds that say nothing about the adapter: the stage could not be
/// set up, or the run was cancelled.
const NOT_THE_ADAPTERS_FAULT: &[FailureKind] = &[
    FailureKind::InvalidInput,
    FailureKind::MissingInput,
    FailureKind::NotConfigured,
    FailureKind::Cancelled,
    // A question waiting for the host says nothing about the endpoint.
    FailureKind::AwaitingAnswer,
];

/// Failure kinds of a model endpoint that are outages: it could not be
/// reached, did not answer in time, or failed on its side (5xx, 429 after the
/// client's retries, a local command that failed to run).
const MODEL_OUTAGES: &[FailureKind] = &[FailureKind::ServiceUnavailable, FailureKind::Timeout];

/// Whether a call's result goes on its adapter's breaker. A success always
/// does (it closes the breaker). A model endpoint (`adapter_kind` "model")
/// answers only for outages: an answer that is cut off, refused, empty or
/// off-schema (`answer_quality`) came from a healthy server and must not make
/// it look down. A plugin answers for every failure of its call; a built-in
/// tool only for failing to run at all (`tool_ran` false).
pub fn counts_for_breaker(
    adapter_kind: &str,
    failure_kind: Option<FailureKind>,
    tool_ran: bool,
) -> bool {
    let Some(kind) = failure_kind else {
        return true;
    };
    if NOT_THE_ADAPTERS_FAULT.contains(&kind) {
        return false;
    }
    match adapter_kind {
        "model" => MODEL_OUTAGES.contains(&kind),
        "tool" => !tool_ran,
        _ => true,
    }
}

/// Records a call's result on the adapter's breaker; returns the new state.
pub fn record(
    db: &mut dyn ExecStore,
    adapter: &str,
    kind: &str,
    ok: bool,
    error: Option<&str>,
    policy: BreakerPolicy,
) -> Result<String, DbError> {
    let now = pmpo_store::now_rfc3339();
    let mut row = db.adapter(adapter)?.unwrap_or(AdapterRow {
        adapter_id: adapter.into(),
        kind: kind.into(),
        breaker_state: Breaker::Closed.as_str().into(),
        consecutive_failures: 0,
        opened_until: None,
        last_error: None,
        updated_at: now.clone(),
    });
    let state = Breaker::parse(&row.breaker_state);
    if ok && state == Breaker::Closed && row.consecutive_failures == 0 {
        // Nothing to change: a success on a healthy adapter costs no write.
        return Ok(row.breaker_state);
    }
    if ok {
        row.breaker_state = Breaker::Closed.as_str().into();
        row.consecutive_failures = 0;
        row.opened_until = None;
    } else {
        row.consecutive_failures += 1;
        row.last_error = error.map(|e| e.chars().take(500).collect());
        if state == Breaker::HalfOpen || row.consecutive_failures >= policy.threshold as i64 {
            row.breaker_state = Breaker::Open.as_str().into();
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(policy.cooldown).unwrap_or_default();
            row.opened_until = Some(until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
    }
    row.updated_at = now;
    db.put_adapter(&row)?;
    Ok(row.breaker_state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_hints() {
        let k = |s: &str, code| classify(s, code).map(|c| c.kind.as_str());
        let m = classify(
            "Traceback...\nModuleNotFoundError: No module named 'jose'\n",
            Some(1),
        )
        .unwrap();
        assert_eq!(m.kind.as_str(), "missing_dependency");
        assert!(m.hint.contains("pip install jose"), "{}", m.hint);
        assert_eq!(
            k("sh: 1: frob: not found", Some(127)),
            Some("missing_dependency")
        );
        assert!(
            classify("sh: 1: frob: not found", Some(127))
                .unwrap()
                .hint
                .contains("`frob`")
        );
        let s = classify("redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.", Some(1)).unwrap();
        assert_eq!(s.kind.as_str(), "service_unavailable");
        assert!(s.hint.contains("127.0.0.1:6379"), "{}", s.hint);
        let p = classify(
            "PermissionError: [Errno 13] Permission denied: '/usr/local/bin/x.sh'",
            Some(1),
        )
        .unwrap();
        assert_eq!(p.kind.as_str(), "permission_denied");
        assert!(p.hint.contains("/usr/local/bin/x.sh"), "{}", p.hint);
        assert_eq!(
            k(
                "ImportError: FastAPI requires version >= 0.95.0, found 0.88.0",
                Some(1)
            ),
            Some("version_incompatibility")
        );
        assert_eq!(k("MemoryError", Some(1)), Some("out_of_memory"));
        assert_eq!(k("something else broke", Some(2)), None);
    }

    #[test]
    fn only_outages_count_against_a_model_endpoint() {
        let kind = |s: &str| Some(s.parse::<FailureKind>().unwrap());
        for k in ["service_unavailable", "timeout"] {
            assert!(counts_for_breaker("model", kind(k), true), "{k}");
        }
        for k in [
            "answer_quality",
            "bad_tool_output",
            "permission_denied",
            "invalid_input",
            "not_configured",
            "cancelled",
            "awaiting_answer",
        ] {
            assert!(!counts_for_breaker("model", kind(k), true), "{k}");
        }
        assert!(
            counts_for_breaker("model", None, true),
            "a success closes it"
        );
        assert!(counts_for_breaker("plugin", kind("tool_failed"), true));
        let checks = Some(FailureKind::ValidationFailed);
        assert!(!counts_for_breaker("model", checks, true));
        assert!(counts_for_breaker("plugin", checks, true));
        assert!(!counts_for_breaker("plugin", kind("cancelled"), true));
        assert!(!counts_for_breaker("tool", kind("bad_tool_output"), true));
        assert!(counts_for_breaker("tool", kind("io"), false));
        assert!(!counts_for_breaker("tool", kind("awaiting_answer"), false));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = Retry {
            attempts: 5,
            backoff: Backoff::Exponential,
            initial: Some(pmpo_plan::Timeout(Duration::from_millis(100))),
            max: Some(pmpo_plan::Timeout(Duration::from_millis(350))),
            jitter: false,
        };
        assert_eq!(backoff_delay(&r, 2, 0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&r, 3, 0), Duration::from_millis(200));
        assert_eq!(backoff_delay(&r, 4, 0), Duration::from_millis(350));
        let fixed = Retry {
            backoff: Backoff::Fixed,
            ..r.clone()
        };
        assert_eq!(backoff_delay(&fixed, 4, 0), Duration::from_millis(100));
        let jittered = Retry { jitter: true, ..r };
        for n in 2..5 {
            let d = backoff_delay(&jittered, n, 7);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(350),
                "{d:?}"
            );
        }
    }
}
