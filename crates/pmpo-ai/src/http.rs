//! The HTTP endpoints: OpenAI-compatible chat completions and the Anthropic
//! Messages API. Each call is one attempt; the client retries.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::endpoint::{CallInfo, Endpoint};
use crate::{
    AiError, ChatRequest, Completion, EndpointConfig, EndpointKind, ErrorKind, Finish, Role,
    Secret, redact,
};

/// The Anthropic API version pmpo speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires a limit; this one is used when none is configured.
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;
/// Longest Retry-After honoured (a longer one fails the call with its value).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An endpoint reached over HTTP.
pub struct HttpEndpoint {
    name: String,
    kind: EndpointKind,
    base_url: String,
    key: Option<Secret>,
    key_source: Option<String>,
    health_probe: Option<String>,
    max_tokens: Option<u32>,
    http: reqwest::Client,
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or("");
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

impl HttpEndpoint {
    pub fn new(cfg: &EndpointConfig) -> Result<Self, AiError> {
        let base_url = cfg.base_url.clone().unwrap_or_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("pmpo/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&base_url) {
            // A proxy from the environment must not intercept a local server.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| {
            AiError::new(
                ErrorKind::NotConfigured,
                format!(
                    "cannot set up the HTTP client for endpoint `{}`: {e}",
                    cfg.name
                ),
            )
        })?;
        Ok(HttpEndpoint {
            name: cfg.name.clone(),
            kind: cfg.kind,
            base_url,
            key: cfg.api_key.clone(),
            key_source: cfg.api_key_source.clone(),
            health_probe: cfg.health_probe.clone(),
            max_tokens: cfg.max_tokens,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        match self.kind {
            // ANTHROPIC_BASE_URL is the host; accept one ending in /v1 too.
            EndpointKind::Anthropic => {
                let base = self.base_url.trim_end_matches("/v1");
                format!("{base}/v1/{path}")
            }
            _ => format!("{}/{path}", self.base_url),
        }
    }

    fn authorize(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (self.kind, &self.key) {
            (EndpointKind::Anthropic, Some(k)) => rb
                .header("x-api-key", k.expose())
                .header("anthropic-version", ANTHROPIC_VERSION),
            (EndpointKind::Anthropic, None) => rb.header("anthropic-version", ANTHROPIC_VERSION),
            (_, Some(k)) => rb.bearer_auth(k.expose()),
            (_, None) => rb,
        }
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> AiError {
        let url = redact(url, self.key.as_ref());
        let cause = redact(&error_chain(&e), self.key.as_ref());
        if e.is_timeout() {
            return AiError::new(
                ErrorKind::Timeout,
                format!("endpoint `{}` did not answer in time ({url})", self.name),
            );
        }
        if e.is_connect() || e.is_builder() {
            let hint = if is_loopback(&url) {
                "is the local model server running and listening on that port? (e.g. `ollama serve`, `llama-server --port 8080`, `vllm serve MODEL`)"
            } else {
                "check the network connection and base_url (`pmpo models` probes every endpoint)"
            };
            return AiError::new(
                ErrorKind::Unreachable,
                format!("cannot reach endpoint `{}` at {url}: {cause}", self.name),
            )
            .hint(hint);
        }
        if e.is_request() || e.is_body() {
            // The connection broke mid-exchange: worth another attempt.
            return AiError::new(
                ErrorKind::ServerError,
                format!(
                    "the connection to endpoint `{}` broke during the exchange ({url}): {cause}",
                    self.name
                ),
            )
            .hint(
                "the server closed the connection; re-run later or configure a fallback endpoint",
            );
        }
        AiError::new(
            ErrorKind::BadResponse,
            format!("endpoint `{}` ({url}): {cause}", self.name),
        )
    }

    /// The models the server lists (`GET {base}/models`), for choosing one
    /// when none is configured.
    pub async fn list_models(&self, timeout: Duration) -> Result<Vec<String>, AiError> {
        let url = self.url("models");
        let v = self
            .send(self.http.get(&url).timeout(timeout), &url, "")
            .await?;
        Ok(v.get("data")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Maps a non-success HTTP answer to a clear error.
    fn status_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
        model: &str,
    ) -> AiError {
        let (msg, code) = server_message(body);
        let msg = redact(&msg, self.key.as_ref());
        let shown = if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        };
        let n = status.as_u16();
        let name = &self.name;
        let lower = format!("{msg} {code}").to_lowercase();
        let model_missing = code == "model_not_found"
            || ((lower.contains("model") || code == "not_found_error")
                && (lower.contains("not found")
                    || lower.contains("does not exist")
                    || lower.contains("not_found")
                    || lower.contains("unknown")));
        let mut err = match n {
            401 | 403 => {
                let hint = match &self.key_source {
                    Some(var) if self.key.is_some() => format!(
                        "the key in ${var} was refused; check it (and that it may use this model)"
                    ),
                    Some(var) => format!("no key was sent: set ${var}"),
                    None => "set api_key_env for this endpoint in pmpo.toml".to_string(),
                };
                AiError::new(
                    ErrorKind::Auth,
                    format!("endpoint `{name}` refused the request as unauthorized (HTTP {n}){shown}"),
                )
                .hint(hint)
            }
            _ if model_missing && (n == 404 || n == 400) => AiError::new(
                ErrorKind::UnknownModel,
                format!("endpoint `{name}` does not know model `{model}` (HTTP {n}){shown}"),
            )
            .hint("name a model the server offers (`pmpo models` lists the routes) with --model or `model =` in pmpo.toml"),
            404 => AiError::new(
                ErrorKind::BadRequest,
                format!("endpoint `{name}` has no such API (HTTP 404 for {}){shown}", self.base_url),
            )
            .hint("check base_url: OpenAI-compatible servers usually end in /v1 (e.g. http://127.0.0.1:11434/v1)"),
            429 => AiError::new(
                ErrorKind::RateLimited,
                format!("endpoint `{name}` is rate limiting (HTTP 429){shown}"),
            )
            .hint("wait and re-run, or route this phase to another endpoint"),
            500..=599 => AiError::new(
                ErrorKind::ServerError,
                format!("endpoint `{name}` failed (HTTP {n}){shown}"),
            )
            .hint("the server had a problem; re-run later or configure a fallback endpoint"),
            _ if lower.contains("content_policy")
                || lower.contains("content policy")
                || lower.contains("safety") =>
            {
                AiError::new(
                    ErrorKind::Refused,
                    format!("endpoint `{name}` refused the request (HTTP {n}){shown}"),
                )
                .hint("reword the prompt")
            }
            _ => AiError::new(
                ErrorKind::BadRequest,
                format!("endpoint `{name}` did not accept the request (HTTP {n}){shown}"),
            )
            .hint("check the stage's prompt size, max_tokens and temperature"),
        };
        err.retry_after = retry_after(headers);
        err
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        url: &str,
        model: &str,
    ) -> Result<Value, AiError> {
        let resp = self
            .authorize(rb)
            .send()
            .await
            .map_err(|e| self.transport_error(url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport_error(url, e))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(self.status_error(status, &headers, &text, model));
        }
        serde_json::from_slice(&body).map_err(|e| {
            AiError::new(
                ErrorKind::BadResponse,
                format!(
                    "endpoint `{}` answered with something that is not JSON ({e}): {}",
                    self.name,
                    redact(&shorten(&text, 200), self.key.as_ref())
                ),
            )
            .hint("is base_url an API endpoint (and not a web page)?")
        })
    }

    fn bad_shape(&self, what: &str) -> AiError {
        AiError::new(
            ErrorKind::BadResponse,
            format!(
                "endpoint `{}` answered in an unexpected format: {what}",
                self.name
            ),
        )
        .hint(match self.kind {
            EndpointKind::Anthropic => "is this endpoint an Anthropic Messages API? (kind = \"anthropic\")",
            _ => "is this endpoint OpenAI-compatible (POST /chat/completions)? otherwise set its kind in pmpo.toml",
        })
    }
}

/// The root cause of a transport error ("Connection refused (os error 111)"),
/// which says more than the layers wrapped around it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut root = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        root = s.to_string();
        src = s.source();
    }
    root
}

fn shorten(text: &str, n: usize) -> String {
    let t = text.trim();
    if t.chars().count() > n {
        format!("{}...", t.chars().take(n).collect::<String>())
    } else {
        t.to_string()
    }
}

/// The server's error message and code, from OpenAI's, Anthropic's or a
/// plain `{"error": "..."}` shape (or the raw text).
fn server_message(body: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (shorten(body, 300), String::new());
    };
    let err = v.get("error").unwrap_or(&v);
    if let Some(s) = err.as_str() {
        return (shorten(s, 300), String::new());
    }
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| v.get("detail").and_then(Value::as_str))
        .unwrap_or("");
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .or_else(|| err.get("type").and_then(Value::as_str))
        .unwrap_or("");
    (shorten(msg, 300), code.to_string())
}

/// `Retry-After` (seconds or an HTTP date) or `retry-after-ms`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[async_trait]
impl Endpoint for HttpEndpoint {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> EndpointKind {
        self.kind
    }

    fn location(&self) -> String {
        // Credentials written into a URL are not shown.
        match self.base_url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) if !host.contains('/') || rest.find('@') < rest.find('/') => {
                    format!("{scheme}://***@{host}")
                }
                _ => self.base_url.clone(),
            },
            None => self.base_url.clone(),
        }
    }

    async fn probe(&self, timeout: Duration) -> Result<(), AiError> {
        let url = self
            .health_probe
            .clone()
            .unwrap_or_else(|| self.url("models"));
        let rb = self.http.get(&url).timeout(timeout);
        self.send(rb, &url, "").await.map(|_| ())
    }

    async fn models(&self, timeout: Duration) -> Result<Vec<String>, AiError> {
        self.list_models(timeout).await
    }

    async fn complete(
        &self,
        _call: CallInfo<'_>,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError> {
        match self.kind {
            EndpointKind::Anthropic => self.complete_anthropic(model, req).await,
            _ => self.complete_openai(model, req).await,
        }
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

impl HttpEndpoint {
    /// One exchange with the Anthropic Messages API.
    async fn complete_anthropic(
        &self,
        model: &str,
        req: &ChatRequest,
    ) -> Result<Completion, AiError> {
        let url = self.url("messages");
        let mut body = json!({
            "model": model,
            "max_tokens": req.max_tokens.or(self.max_tokens).unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS),
            "messages": req.messages.iter().map(|m| json!({"role": role(m.role), "content": m.content})).collect::<Vec<_>>(),
        });
        if let Some(s) = &req.system {
            body["system"] = json!(s);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        let v = self
            .send(self.http.post(&url).json(&body), &url, model)
            .await?;
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad_shape("no `content` list"))?;
        let text: String = blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        // A key echoed into an answer must not reach files or cassettes.
        let text = redact(&text, self.key.as_ref());
        let finish = match v.get("stop_reason").and_then(Value::as_str) {
            Some("end_turn") | Some("stop_sequence") | None => Finish::Stop,
            Some("max_tokens") | Some("model_context_window_exceeded") => Finish::Length,
            Some("refusal") => Finish::Refused,
            Some(_) => Finish::Other,
        };
        let usage = v.get("usage");
        Ok(Completion {
            text,
            finish,
            tokens_in: usage
                .and_then(|u| u.get("input_tokens"))
                .and_then(Value::as_u64),
            tokens_out: usage
                .and_then(|u| u.get("output_tokens"))
                .and_then(Value::as_u64),
        })
    }

    /// One exchange with an OpenAI-compatible chat completions API.
    async fn complete_openai(&self, model: &str, req: &ChatRequest) -> Result<Completion, AiError> {
        let url = self.url("chat/completions");
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(s) = &req.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.extend(
            req.messages
                .iter()
                .map(|m| json!({"role": role(m.role), "content": m.content})),
        );
        let mut body = json!({"model": model, "messages": messages, "stream": false});
        if let Some(n) = req.max_tokens.or(self.max_tokens) {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = req.temperature {
            body["temperature"] = json!(t);
        }
        let v = match self
            .send(self.http.post(&url).json(&body), &url, model)
            .await
        {
            // Newer OpenAI models take `max_completion_tokens` instead.
            Err(e)
                if e.kind == ErrorKind::BadRequest
                    && e.message.contains("max_completion_tokens") =>
            {
                let Some(obj) = body.as_object_mut() else {
                    return Err(e);
                };
                let Some(n) = obj.remove("max_tokens") else {
                    return Err(e);
                };
                obj.insert("max_completion_tokens".into(), n);
                self.send(self.http.post(&url).json(&body), &url, model)
                    .await?
            }
            other => other?,
        };
        let choice = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .ok_or_else(|| self.bad_shape("no `choices`"))?;
        let message = choice.get("message");
        let usage = v.get("usage");
        let tokens = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
        // A refusal is an answer: returned as one, so the client rejects,
        // records and reports it like every other unusable answer.
        if let Some(refusal) = message
            .and_then(|m| m.get("refusal"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            return Ok(Completion {
                text: redact(refusal, self.key.as_ref()),
                finish: Finish::Refused,
                tokens_in: tokens("prompt_tokens"),
                tokens_out: tokens("completion_tokens"),
            });
        }
        let text = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let text = redact(text, self.key.as_ref());
        let finish = match choice.get("finish_reason").and_then(Value::as_str) {
            Some("stop") | None => Finish::Stop,
            Some("length") => Finish::Length,
            Some("content_filter") => Finish::Refused,
            Some(_) => Finish::Other,
        };
        Ok(Completion {
            text,
            finish,
            tokens_in: tokens("prompt_tokens"),
            tokens_out: tokens("completion_tokens"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    #[test]
    fn server_messages() {
        let (m, c) = server_message(r#"{"error":{"message":"bad key","code":"invalid_api_key"}}"#);
        assert_eq!((m.as_str(), c.as_str()), ("bad key", "invalid_api_key"));
        let (m, c) = server_message(
            r#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#,
        );
        assert_eq!((m.as_str(), c.as_str()), ("model: x", "not_found_error"));
        assert_eq!(
            server_message(r#"{"error":"model 'x' not found"}"#).0,
            "model 'x' not found"
        );
        assert!(is_loopback("http://127.0.0.1:8080/v1") && !is_loopback("https://api.example.com"));
    }
}
