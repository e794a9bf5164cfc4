//! The client: routes a call to an endpoint (health probe, fallback), makes
//! it with a time limit, retries and cancellation, checks the answer,
//! records it to a cassette and logs it to the routing log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmpo_store::{Workspace, now_rfc3339};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cassette::{CassetteEntry, RecordedError, Recorder, ReplayEndpoint};
use crate::command::CommandEndpoint;
use crate::endpoint::{CallInfo, Endpoint};
use crate::http::{HttpEndpoint, MAX_RETRY_AFTER};
use crate::{
    AiConfig, AiError, ChatRequest, Completion, EndpointKind, ErrorKind, Finish, Phase, Rejected,
    Route,
};

/// Every model call of a run, one JSON object per line, in the workspace.
pub const ROUTING_LOG: &str = "logs/model_routing.jsonl";
/// Time limit of one health probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who calls, where the log goes, and the limits of the call.
pub struct CallContext<'a> {
    pub workspace: &'a Workspace,
    pub run_id: &'a str,
    pub stage: &'a str,
    pub phase: Phase,
    /// What the stage itself asks for (`endpoint:` / `model:` in the plan).
    pub route: Route,
    pub cancel: &'a CancellationToken,
    /// When the stage's time is up.
    pub deadline: Instant,
    /// What the question is about, for the host (`via = "host"`): the
    /// answer's schema, the files, the constraints a check measures.
    pub brief: Option<&'a crate::host::Brief>,
}

/// A checked answer and how it was obtained.
#[derive(Debug, Clone)]
pub struct Answer {
    pub completion: Completion,
    pub endpoint: String,
    pub model: String,
    pub latency: Duration,
    pub attempts: u32,
    pub request_hash: String,
    /// Set when the preferred endpoint was passed over.
    pub fallback_from: Option<String>,
    pub notes: Vec<String>,
    /// Where this answer goes if the caller keeps it (`.state/ai/RUN/STAGE/answer-N`,
    /// without extension): numbered in the order answers arrived. Nothing is
    /// written there for an accepted answer; see [`Client::keep_answer`].
    pub keep_as: String,
}

/// Where the answers of a call are kept: `ANSWERS_DIR/<run>/<stage>/answer-N.txt`
/// and, beside each, `answer-N.json`.
pub const ANSWERS_DIR: &str = ".state/ai";

/// One endpoint's state for `pmpo models`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointHealth {
    pub name: String,
    pub kind: &'static str,
    pub location: String,
    pub model: Option<String>,
    /// The environment variable the key is read from (never the key).
    pub api_key_env: Option<String>,
    pub api_key_set: bool,
    pub healthy: bool,
    pub error: Option<String>,
    pub probe_ms: f64,
    /// The models the server lists (OpenAI-compatible and Anthropic endpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<String>,
}

/// The model client of a run.
pub struct Client {
    config: AiConfig,
    endpoints: BTreeMap<String, Arc<dyn Endpoint>>,
    recorder: Option<Recorder>,
    probes: Mutex<HashMap<String, ProbeResult>>,
    /// Models chosen from a server's list when none was configured.
    discovered: Mutex<HashMap<String, String>>,
    /// The last answer number given out per `.state/ai/<run>/<stage>` directory.
    numbered: Mutex<HashMap<String, u32>>,
}

/// When an endpoint was probed and what came of it.
type ProbeResult = (Instant, Result<(), AiError>);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Client {
    /// Builds the endpoints. A replay cassette is read now; a record cassette is started now.
    pub fn new(config: AiConfig) -> Result<Client, AiError> {
        let mut endpoints: BTreeMap<String, Arc<dyn Endpoint>> = BTreeMap::new();
        for (name, ep) in &config.endpoints {
            let built: Arc<dyn Endpoint> = match ep.kind {
                EndpointKind::Openai | EndpointKind::Anthropic => Arc::new(HttpEndpoint::new(ep)?),
                EndpointKind::Command => Arc::new(CommandEndpoint::new(ep)),
                EndpointKind::Replay => {
                    let path = ep.cassette.clone().unwrap_or_default();
                    Arc::new(ReplayEndpoint::load(name, &path)?)
                }
                EndpointKind::Host => Arc::new(crate::host::HostEndpoint::new(name)),
            };
            endpoints.insert(name.clone(), built);
        }
        let recorder = match &config.record {
            Some(path) => Some(Recorder::create(path)?),
            None => None,
        };
        Ok(Client {
            config,
            endpoints,
            recorder,
            probes: Mutex::new(HashMap::new()),
            discovered: Mutex::new(HashMap::new()),
            numbered: Mutex::new(HashMap::new()),
        })
    }

    /// Adds (or replaces) an endpoint, e.g. a test double.
    pub fn with_endpoint(mut self, endpoint: Arc<dyn Endpoint>) -> Self {
        self.endpoints.insert(endpoint.name().to_string(), endpoint);
        self
    }

    pub fn config(&self) -> &AiConfig {
        &self.config
    }

    pub fn is_configured(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The model a route uses on an endpoint, if any is known.
    fn model_for(&self, endpoint: &str, route_model: Option<&str>) -> Option<String> {
        route_model
            .map(str::to_string)
            .or_else(|| self.config.model_override.clone())
            .or_else(|| {
                self.config
                    .endpoints
                    .get(endpoint)
                    .and_then(|e| e.model.clone())
            })
    }

    /// Probes an endpoint, trusting a recent result.
    pub async fn probe(&self, name: &str) -> Result<(), AiError> {
        if let Some((at, r)) = self
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            && at.elapsed() < self.config.probe_ttl
        {
            return r.clone();
        }
        let r = match self.endpoints.get(name) {
            Some(ep) => ep.probe(PROBE_TIMEOUT).await,
            None => Err(AiError::new(
                ErrorKind::NotConfigured,
                format!("endpoint `{name}` is not defined"),
            )),
        };
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (Instant::now(), r.clone()));
        r
    }

    /// Every endpoint, probed now (for `pmpo models`).
    pub async fn health(&self) -> Vec<EndpointHealth> {
        let mut out = Vec::new();
        for (name, ep) in &self.endpoints {
            self.probes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            let t = Instant::now();
            let r = self.probe(name).await;
            let cfg = self.config.endpoints.get(name);
            let offers = if r.is_ok() {
                ep.models(PROBE_TIMEOUT).await.unwrap_or_default()
            } else {
                Vec::new()
            };
            out.push(EndpointHealth {
                name: name.clone(),
                kind: ep.kind().as_str(),
                location: ep.location(),
                model: cfg.and_then(|c| c.model.clone()),
                api_key_env: cfg.and_then(|c| c.api_key_source.clone()),
                api_key_set: cfg.is_some_and(|c| c.api_key.is_some()),
                healthy: r.is_ok(),
                error: r.err().map(|e| e.message),
                probe_ms: ms(t.elapsed()),
                offers,
            });
        }
        out
    }

    /// Asks the routed model. The answer is checked (not empty, not cut off,
    /// not refused), recorded when recording, and every call is logged.
    pub async fn complete(
        &self,
        ctx: &CallContext<'_>,
        req: &ChatRequest,
    ) -> Result<Answer, AiError> {
        let route = self.config.route(ctx.phase, ctx.stage, &ctx.route);
        let Some(preferred) = route.endpoint.clone() else {
            return Err(
                AiError::new(ErrorKind::NotConfigured, "no model endpoint is configured")
                    .hint(AiConfig::how_to_configure()),
            );
        };
        self.check_route(ctx, &preferred, route.fallback.as_ref())?;
        let mut notes = Vec::new();
        let mut chosen = preferred.clone();
        let mut fallback_from = None;
        let mut fallback = route.fallback.clone().filter(|f| f != &preferred);
        if let Some(fb) = &fallback
            && let Err(e) = self.probe(&preferred).await
        {
            notes.push(format!(
                "endpoint `{preferred}` failed its health probe ({}); using fallback `{fb}`",
                e.message
            ));
            fallback_from = Some(preferred.clone());
            chosen = fb.clone();
            fallback = None;
        }
        let hash = req.hash();
        loop {
            let model = if fallback_from.is_some() {
                // The route's model belongs to the preferred endpoint.
                self.model_for(&chosen, None)
            } else {
                self.model_for(&chosen, route.model.as_deref())
            };
            let Some(ep) = self.endpoints.get(&chosen).map(Arc::clone) else {
                return Err(AiError::new(
                    ErrorKind::NotConfigured,
                    format!("endpoint `{chosen}` is not configured"),
                ));
            };
            let model = match (model, ep.kind()) {
                (_, EndpointKind::Host) => crate::host::HOST.to_string(),
                (Some(m), _) => m,
                (None, EndpointKind::Replay | EndpointKind::Command) => String::new(),
                (None, _) => self.only_model(ep.as_ref(), &mut notes).await?,
            };
            let t0 = Instant::now();
            let (result, attempts) = self.attempts(ctx, ep.as_ref(), &model, req).await;
            let latency = t0.elapsed();
            let (result, keep_as) = self.judge(ctx, ep.as_ref(), &chosen, &model, req, result);
            self.log(
                ctx,
                ep.as_ref(),
                &model,
                &hash,
                &result,
                latency,
                attempts,
                fallback_from.as_deref(),
            );
            // Everything that was said is recorded (a rejected answer and a
            // server's error too), so a replay reproduces this run and not a
            // cleaner one. A failure the fallback absorbs is not the outcome.
            let absorbed = matches!(&result, Err(e) if fallback.is_some()
                && e.kind.endpoint_down()
                && !ctx.cancel.is_cancelled());
            if !absorbed
                && let Err(w) = self.record(ctx, ep.as_ref(), &chosen, &model, &hash, req, &result)
            {
                return match result {
                    Ok(_) => Err(w),
                    Err(mut e) => {
                        e.message =
                            format!("{}; it could not be recorded: {}", e.message, w.message);
                        Err(e)
                    }
                };
            }
            match result {
                Ok(completion) => {
                    return Ok(Answer {
                        completion,
                        endpoint: chosen,
                        model,
                        latency,
                        attempts,
                        request_hash: hash,
                        fallback_from,
                        notes,
                        keep_as,
                    });
                }
                Err(e) => match fallback.take() {
                    Some(fb) if e.kind.endpoint_down() && !ctx.cancel.is_cancelled() => {
                        notes.push(format!(
                            "endpoint `{chosen}` failed ({}); using fallback `{fb}`",
                            e.message
                        ));
                        fallback_from = Some(chosen.clone());
                        chosen = fb;
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Every endpoint a route names must be configured.
    fn check_route(
        &self,
        ctx: &CallContext<'_>,
        preferred: &String,
        fallback: Option<&String>,
    ) -> Result<(), AiError> {
        for name in std::iter::once(preferred).chain(fallback) {
            if !self.endpoints.contains_key(name) {
                let known: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
                return Err(AiError::new(
                ErrorKind::NotConfigured,
                format!(
                    "stage `{}` asks for endpoint `{name}`, which is not configured (configured: {})",
                    ctx.stage,
                    known.join(", ")
                ),
            )
            .hint("define it under [ai.endpoints] in pmpo.toml (see docs/configuration.md)"));
            }
        }
        Ok(())
    }

    /// Checks what an endpoint answered (not empty, cut off or refused), in
    /// the name of who said it, gives an answer its number, and keeps a
    /// rejected one at once (the caller may not be able to). Returns the
    /// result and the answer's number (`keep_as`, empty when nothing was said).
    fn judge(
        &self,
        ctx: &CallContext<'_>,
        ep: &dyn Endpoint,
        chosen: &str,
        model: &str,
        req: &ChatRequest,
        result: Result<Completion, AiError>,
    ) -> (Result<Completion, AiError>, String) {
        let hash = req.hash();
        // A replayed answer is judged in the name of the endpoint and model
        // that gave it, so a replayed failure reads exactly as the recorded one.
        let (judged_as, judged_model) = ep
            .recorded_origin(req)
            .unwrap_or_else(|| (chosen.to_string(), model.to_string()));
        let result = result.and_then(|c| match check_answer(&judged_as, &c) {
            Ok(()) => Ok(c),
            Err(mut e) => {
                e.answer = Some(Box::new(Rejected {
                    completion: c,
                    endpoint: judged_as.clone(),
                    model: judged_model.clone(),
                    request_hash: hash.clone(),
                    kept: None,
                }));
                Err(e)
            }
        });
        // Every answer gets its number now, in the order they came; a
        // rejected one is kept at once (the caller may not be able to).
        let said = match &result {
            Ok(_) => true,
            Err(e) => e.answer.is_some(),
        };
        let keep_as = if said {
            self.next_answer_slot(ctx)
        } else {
            String::new()
        };
        let result = result.map_err(|mut e| {
            if let Some(a) = e.answer.as_mut() {
                let problems = [e.message.clone()];
                match Self::keep_answer(
                    ctx.workspace,
                    &keep_as,
                    &a.completion,
                    &a.endpoint,
                    &a.model,
                    &a.request_hash,
                    e.kind.as_str(),
                    &problems,
                ) {
                    Ok(path) => {
                        e.message = format!("{}; the answer is kept in {path}", e.message);
                        a.kept = Some(path);
                    }
                    Err(w) => {
                        e.message = format!("{}; the answer could not be kept: {w}", e.message);
                    }
                }
            }
            e
        });
        (result, keep_as)
    }

    /// The next `.state/ai/<run>/<stage>/answer-N` (no extension) of a call's
    /// stage. The first time a directory is seen, numbering continues after
    /// the answers already there (a resumed run keeps its earlier ones).
    fn next_answer_slot(&self, ctx: &CallContext<'_>) -> String {
        let dir = format!("{ANSWERS_DIR}/{}/{}", ctx.run_id, ctx.stage);
        let mut numbered = self.numbered.lock().unwrap_or_else(|p| p.into_inner());
        let n = numbered.entry(dir.clone()).or_insert_with(|| {
            let Ok(path) = ctx.workspace.resolve(&dir) else {
                return 0;
            };
            std::fs::read_dir(path)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter_map(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            name.strip_prefix("answer-")?
                                .split('.')
                                .next()?
                                .parse::<u32>()
                                .ok()
                        })
                        .max()
                        .unwrap_or(0)
                })
                .unwrap_or(0)
        });
        *n += 1;
        format!("{dir}/answer-{n}")
    }

    /// Keeps an answer where the user can read it: `{keep_as}.txt` (the text
    /// as received) and `{keep_as}.json` (endpoint, model, request hash,
    /// finish reason, token counts, the verdict and its problems). Returns the
    /// text file's path.
    #[allow(clippy::too_many_arguments)]
    pub fn keep_answer(
        ws: &Workspace,
        keep_as: &str,
        completion: &Completion,
        endpoint: &str,
        model: &str,
        request_hash: &str,
        verdict: &str,
        problems: &[String],
    ) -> Result<String, pmpo_store::StoreError> {
        if let Some((dir, _)) = keep_as.rsplit_once('/') {
            ws.create_dir_all(dir)?;
        }
        let text = format!("{keep_as}.txt");
        ws.write_atomic(
            &text,
            pmpo_store::secrets::redact(&completion.text).as_bytes(),
            pmpo_store::Durability::Relaxed,
        )?;
        let meta = json!({
            "answer": text.rsplit('/').next().unwrap_or_default(),
            "endpoint": endpoint,
            "model": model,
            "request_hash": request_hash,
            "finish": completion.finish,
            "tokens_in": completion.tokens_in,
            "tokens_out": completion.tokens_out,
            "verdict": verdict,
            "problems": problems,
        });
        let mut bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        bytes.push(b'\n');
        ws.write_atomic(
            &format!("{keep_as}.json"),
            &bytes,
            pmpo_store::Durability::Relaxed,
        )?;
        Ok(text)
    }

    /// With no model configured, the one model the server lists (a local
    /// server usually serves exactly one); otherwise an error naming them.
    async fn only_model(
        &self,
        ep: &dyn Endpoint,
        notes: &mut Vec<String>,
    ) -> Result<String, AiError> {
        let name = ep.name().to_string();
        if let Some(m) = self
            .discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
        {
            return Ok(m.clone());
        }
        let hint = "pass --model NAME, or set `model =` for the endpoint or the phase in pmpo.toml (OPENAI_MODEL / ANTHROPIC_MODEL also work)";
        let listed = ep.models(PROBE_TIMEOUT).await.unwrap_or_default();
        match listed.as_slice() {
            [only] => {
                notes.push(format!(
                    "no model configured for endpoint `{name}`; using `{only}`, the only model it lists"
                ));
                self.discovered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, only.clone());
                Ok(only.clone())
            }
            [] => Err(AiError::new(
                ErrorKind::NotConfigured,
                format!("no model is chosen for endpoint `{name}`"),
            )
            .hint(hint)),
            many => Err(AiError::new(
                ErrorKind::NotConfigured,
                format!(
                    "no model is chosen for endpoint `{name}`, which offers: {}{}",
                    many.iter().take(12).cloned().collect::<Vec<_>>().join(", "),
                    if many.len() > 12 { ", ..." } else { "" }
                ),
            )
            .hint(hint)),
        }
    }

    /// One endpoint, with the time limit, cancellation and retries on 429/5xx.
    async fn attempts(
        &self,
        ctx: &CallContext<'_>,
        ep: &dyn Endpoint,
        model: &str,
        req: &ChatRequest,
    ) -> (Result<Completion, AiError>, u32) {
        let call = CallInfo {
            stage: ctx.stage,
            phase: ctx.phase,
            run_id: ctx.run_id,
            workspace: Some(ctx.workspace),
            brief: ctx.brief,
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = ctx.deadline.saturating_duration_since(Instant::now());
            let limit = left.min(self.config.request_timeout);
            let result = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => Err(AiError::new(ErrorKind::Cancelled, "cancelled")),
                r = tokio::time::timeout(limit, ep.complete(call, model, req)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(AiError::new(
                        ErrorKind::Timeout,
                        format!("endpoint `{}` did not answer within {:.1?}", ep.name(), limit),
                    ).hint("raise the stage's `timeout:` or `timeout` under [ai] in pmpo.toml, or use a faster model")),
                },
            };
            let err = match result {
                Ok(c) => return (Ok(c), attempt),
                Err(e) => e,
            };
            // A replayed error is the recorded outcome, retries included.
            if !err.kind.retryable()
                || attempt > self.config.max_retries
                || ep.kind() == EndpointKind::Replay
            {
                return (Err(err), attempt);
            }
            let backoff = Duration::from_millis(500u64 << (attempt - 1).min(5));
            let wait = err.retry_after.unwrap_or(backoff);
            let left = ctx.deadline.saturating_duration_since(Instant::now());
            if wait > MAX_RETRY_AFTER || wait >= left {
                let mut e = err;
                e.message = format!(
                    "{} (the server asks to retry after {:.1?}, beyond the stage's time limit)",
                    e.message, wait
                );
                return (Err(e), attempt);
            }
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => {
                    return (Err(AiError::new(ErrorKind::Cancelled, "cancelled")), attempt);
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Appends an exchange to the cassette when recording: an answer
    /// (accepted or rejected) or an error the endpoint itself gave (an HTTP
    /// error, a malformed answer, a failing command). Nothing is recorded for
    /// what no endpoint said: unreachable, timed out, cancelled, not configured.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &CallContext<'_>,
        ep: &dyn Endpoint,
        endpoint: &str,
        model: &str,
        hash: &str,
        req: &ChatRequest,
        result: &Result<Completion, AiError>,
    ) -> Result<(), AiError> {
        let host = ep.kind() == EndpointKind::Host;
        if ep.kind() == EndpointKind::Replay || (self.recorder.is_none() && !host) {
            return Ok(());
        }
        let (response, rejected, error) = match result {
            Ok(c) => (Some(c.clone()), None, None),
            Err(e) => match &e.answer {
                Some(a) => (
                    Some(a.completion.clone()),
                    Some(e.kind.as_str().to_string()),
                    None,
                ),
                None if e.kind.said_by_endpoint() => (None, None, Some(RecordedError::of(e))),
                None => return Ok(()),
            },
        };
        let entry = CassetteEntry {
            hash: hash.to_string(),
            stage: ctx.stage.to_string(),
            phase: ctx.phase,
            endpoint: endpoint.to_string(),
            model: model.to_string(),
            request: req.clone(),
            response,
            rejected,
            error,
        };
        if host {
            // The host answers across several processes (each `pmpo answer`
            // goes on in a new one): the workspace keeps one cassette of all
            // its answers, so a host-driven run replays offline.
            crate::host::record(ctx.workspace, &entry)?;
        }
        match &self.recorder {
            Some(rec) => rec.append(&entry),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        ctx: &CallContext<'_>,
        ep: &dyn Endpoint,
        model: &str,
        hash: &str,
        result: &Result<Completion, AiError>,
        latency: Duration,
        attempts: u32,
        fallback_from: Option<&str>,
    ) {
        let said = match result {
            Ok(c) => Some(c),
            Err(e) => e.answer.as_ref().map(|a| &a.completion),
        };
        let (tin, tout) = said.map_or((None, None), |c| (c.tokens_in, c.tokens_out));
        let mut rec = json!({
            "time": now_rfc3339(),
            "run_id": ctx.run_id,
            "phase": ctx.phase,
            "stage": ctx.stage,
            "endpoint": ep.name(),
            "kind": ep.kind().as_str(),
            "model": model,
            "tokens_in": tin,
            "tokens_out": tout,
            "latency_ms": ms(latency),
            "attempts": attempts,
            "outcome": match result { Ok(_) => "ok", Err(e) => e.kind.as_str() },
            "request_hash": hash,
        });
        if let Some(c) = said {
            rec["finish"] = json!(c.finish);
        }
        if let Err(e) = result {
            rec["error"] = json!(e.message);
        }
        if let Some(f) = fallback_from {
            rec["fallback_from"] = json!(f);
        }
        if let Ok(mut line) = serde_json::to_vec(&rec) {
            line.push(b'\n');
            // A log that cannot be written must not fail the stage.
            let line = pmpo_store::secrets::redact_bytes(&line);
            let _ = ctx.workspace.append(ROUTING_LOG, &line);
        }
    }
}

/// An answer that is empty, cut off or refused is an error, not an answer.
fn check_answer(endpoint: &str, c: &Completion) -> Result<(), AiError> {
    match c.finish {
        Finish::Length => Err(AiError::new(
            ErrorKind::Truncated,
            format!(
                "the answer from endpoint `{endpoint}` was cut off at the token limit ({} tokens out)",
                c.tokens_out.map_or("?".to_string(), |n| n.to_string())
            ),
        )
        .hint("raise `max_tokens` in the stage's `with:` (or for the endpoint in pmpo.toml), or ask for less")),
        Finish::Refused => {
            let said = one_line(&c.text, 300);
            Err(AiError::new(
                ErrorKind::Refused,
                if said.is_empty() {
                    format!("the model on endpoint `{endpoint}` refused to answer (content filter or refusal)")
                } else {
                    format!("the model on endpoint `{endpoint}` refused: {said}")
                },
            )
            .hint("reword the prompt"))
        }
        _ if c.text.trim().is_empty() => Err(AiError::new(
            ErrorKind::EmptyAnswer,
            format!("endpoint `{endpoint}` returned an empty answer"),
        )
        .hint("check the prompt and the model (some models need a larger max_tokens)")),
        _ => Ok(()),
    }
}

/// Text on one line, shortened to `n` characters.
fn one_line(text: &str, n: usize) -> String {
    let t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() > n {
        format!("{}...", t.chars().take(n).collect::<String>())
    } else {
        t
    }
}
