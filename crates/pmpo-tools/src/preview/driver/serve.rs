//! The virtual origin: a request for `ORIGIN/<path>` is answered with the
//! workspace file at `<path>`; any other request is blocked unless the
//! network is allowed.

use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{ORIGIN, PageState, str_of};
use crate::preview::report::FailedRequest;

/// A workspace path as a URL on the virtual origin.
pub fn url_of(rel: &str) -> String {
    let mut out = String::from(ORIGIN);
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("wasm") => "application/wasm",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl PageState<'_> {
    /// A request the page makes, held by interception: answered from the
    /// workspace, passed on, or blocked.
    pub(super) fn on_request_paused(&mut self, p: &Value) {
        let Some(fetch_id) = str_of(p, "requestId") else {
            return;
        };
        let req = p.get("request").cloned().unwrap_or(Value::Null);
        let url = str_of(&req, "url").unwrap_or_default().to_string();
        let method = str_of(&req, "method").unwrap_or("GET").to_string();
        let network_id = str_of(p, "networkId").unwrap_or_default().to_string();
        let resource_type = str_of(p, "resourceType").map(str::to_string);
        if !network_id.is_empty() {
            self.answered.insert(network_id.clone());
            self.inflight.remove(&network_id);
            self.last_activity = Instant::now();
        }
        let mut failure: Option<(String, Option<u16>, bool)> = None;
        let s = Some(self.session.as_str());
        let result = if let Some(rest) = url.strip_prefix(ORIGIN) {
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            let (code, phrase, ctype, body) = self.serve(path, &method);
            if code >= 400 {
                failure = Some((format!("HTTP {code} {phrase}"), Some(code), false));
            }
            let engine = base64::engine::general_purpose::STANDARD;
            self.conn.send(
                s,
                "Fetch.fulfillRequest",
                json!({
                    "requestId": fetch_id,
                    "responseCode": code,
                    "responsePhrase": phrase,
                    "responseHeaders": [
                        {"name": "Content-Type", "value": ctype},
                        {"name": "Cache-Control", "value": "no-store"},
                    ],
                    "body": engine.encode(if method == "HEAD" { &[][..] } else { &body[..] }),
                }),
            )
        } else if self.network || url.starts_with("data:") || url.starts_with("blob:") {
            self.conn
                .send(s, "Fetch.continueRequest", json!({"requestId": fetch_id}))
        } else {
            failure = Some((
                "net::ERR_BLOCKED_BY_CLIENT: blocked by pmpo, network access is off for this preview (set `network: true` to allow)".into(),
                None,
                true,
            ));
            self.blocked.insert(url.clone());
            self.conn.send(
                s,
                "Fetch.failRequest",
                json!({"requestId": fetch_id, "errorReason": "BlockedByClient"}),
            )
        };
        if let Err(e) = result {
            self.obs
                .notes
                .push(format!("could not answer a request: {e}"));
        }
        if let Some((reason, status, blocked)) = failure
            && (network_id.is_empty() || self.failed.insert(network_id))
        {
            self.obs.failed_requests.push(FailedRequest {
                url,
                method,
                resource_type,
                reason,
                status,
                blocked,
            });
        }
    }

    /// A file of the workspace for a path on the virtual origin.
    fn serve(&self, path: &str, method: &str) -> (u16, &'static str, &'static str, Vec<u8>) {
        if method != "GET" && method != "HEAD" {
            return (
                405,
                "Method Not Allowed",
                "text/plain; charset=utf-8",
                b"the preview serves files only (GET)".to_vec(),
            );
        }
        let not_found = (
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            b"not found".to_vec(),
        );
        let Some(decoded) = percent_decode(path.trim_start_matches('/')) else {
            return not_found;
        };
        let rel = if decoded.is_empty() || decoded.ends_with('/') {
            format!("{decoded}index.html")
        } else {
            decoded
        };
        // Served as tools read: a link leading out of the workspace is not found.
        match self.ws.read(&rel) {
            Ok(bytes) => (200, "OK", content_type(&rel), bytes),
            // The browser asks for a site icon on its own; a page that has
            // none is not broken.
            _ if rel == "favicon.ico" => (204, "No Content", "image/x-icon", Vec::new()),
            _ => not_found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_trip() {
        let u = url_of("pages/my card #1.html");
        assert_eq!(u, format!("{ORIGIN}/pages/my%20card%20%231.html"));
        let path = u.strip_prefix(ORIGIN).unwrap().trim_start_matches('/');
        assert_eq!(percent_decode(path).unwrap(), "pages/my card #1.html");
        assert_eq!(content_type("a/b.JS"), "text/javascript; charset=utf-8");
    }
}
