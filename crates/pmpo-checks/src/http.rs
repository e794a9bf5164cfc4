//! `http`: GET a URL and compare the status (a service health check).
//!
//! Plain HTTP/1.1 over a TCP connection, loopback only unless
//! `allow_network: true`: a check should not reach the outside by accident.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::params::{self, Kind, get_bool, get_duration, get_str, opt, req};
use crate::{CheckDef, CheckError, Ctx, Verdict};

const MAX_BODY: usize = 1024 * 1024;

pub(crate) const HTTP: CheckDef = CheckDef {
    name: "http",
    aliases: &["http_get", "service_health", "health"],
    summary: "GET a URL (loopback unless allow_network) and expect a status",
    params: &[
        req("url", Kind::Str, "http://127.0.0.1:8000/health"),
        opt("status", Kind::UInt, "the expected status (default 200)"),
        opt(
            "timeout",
            Kind::Duration,
            "time limit per attempt (default 10s)",
        ),
        opt(
            "retry_for",
            Kind::Duration,
            "keep retrying a refused connection this long (a service starting up)",
        ),
        opt("contains", Kind::Str, "text the response body must contain"),
        opt(
            "allow_network",
            Kind::Bool,
            "allow hosts other than loopback (default false)",
        ),
    ],
    rules: |p| match p.get("url").and_then(Value::as_str).map(parse_url) {
        Some(Err(e)) => vec![params::issue(
            "url",
            e,
            Some("e.g. http://127.0.0.1:8000/health".into()),
        )],
        _ => Vec::new(),
    },
    run,
};

struct Url {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    if url.starts_with("https://") {
        return Err("https is not supported by this check; use http:// on loopback".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: bad IPv6 host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("`{url}`: bad port"))?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("`{url}`: bad port `{p}`"))?,
            ),
            None => (hostport.to_string(), 80),
        }
    };
    if host.is_empty() || host.contains(['@', ' ']) {
        return Err(format!("`{url}` has no valid host"));
    }
    if path.contains(['\r', '\n', ' ']) {
        return Err(format!("`{url}`: the path contains spaces or line breaks"));
    }
    Ok(Url {
        host,
        port,
        path: path.to_string(),
    })
}

fn run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    let url_text = get_str(p, "url").unwrap_or_default();
    let url = parse_url(url_text).map_err(CheckError::Param)?;
    let want = params::get_u64(p, "status").unwrap_or(200);
    let timeout = get_duration(p, "timeout", Duration::from_secs(10))?;
    let retry_for = get_duration(p, "retry_for", Duration::from_millis(1))?;
    let allow_network = get_bool(p, "allow_network", false);
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| CheckError::Param(format!("cannot resolve `{}`: {e}", url.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(CheckError::Param(format!(
            "`{}` resolves to no address",
            url.host
        )));
    }
    // Refused by policy, without connecting: nothing was observed.
    if !allow_network && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Ok(Verdict::not_checked(
            format!(
                "not checked: `{}` is not a loopback address; set `allow_network: true` to reach other hosts",
                url.host
            ),
            json!({"url": url_text, "addresses": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()}),
        ));
    }
    let start = Instant::now();
    let mut attempts = 0;
    let result = loop {
        attempts += 1;
        match get(&addrs, &url, timeout) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && start.elapsed() < retry_for
                    && !ctx.cancel.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                thread::sleep(Duration::from_millis(100));
            }
            r => break r,
        }
    };
    let evidence = |status: Option<u16>, body: &str, err: Option<String>| {
        json!({
            "url": url_text, "expected_status": want, "status": status, "attempts": attempts,
            "elapsed_ms": start.elapsed().as_millis() as u64,
            "body_head": body.chars().take(2000).collect::<String>(), "error": err,
        })
    };
    match result {
        Err(e) => Ok(Verdict::new(
            false,
            format!("GET {url_text} failed: {e}"),
            evidence(None, "", Some(e.to_string())),
        )),
        Ok((status, body, cut)) => {
            let mut passed = u64::from(status) == want;
            let mut message = if passed {
                format!("GET {url_text}: {status}")
            } else {
                format!("GET {url_text}: status {status}, expected {want}")
            };
            if passed
                && let Some(text) = get_str(p, "contains")
                && !body.contains(text)
            {
                if cut {
                    return Ok(Verdict::not_checked(
                        format!(
                            "GET {url_text}: {status}, but the body is longer than the {MAX_BODY} bytes read, and {text:?} is not in them: not checked"
                        ),
                        evidence(Some(status), &body, None),
                    ));
                }
                passed = false;
                message =
                    format!("GET {url_text}: {status}, but the body does not contain {text:?}");
            }
            Ok(Verdict::new(
                passed,
                message,
                evidence(Some(status), &body, None),
            ))
        }
    }
}

/// The status, the body (at most about [`MAX_BODY`] bytes) and whether it was cut.
fn get(addrs: &[SocketAddr], url: &Url, timeout: Duration) -> std::io::Result<(u16, String, bool)> {
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut s = match stream {
        Some(s) => s,
        None => return Err(last.unwrap_or_else(|| std::io::Error::other("no address"))),
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    // One write: a server that answers after its first read must see the whole request.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: pmpo-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.port
    );
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let limit = MAX_BODY as u64 + 16 * 1024;
    (&mut s).take(limit).read_to_end(&mut buf)?;
    // Anything left after the limit means the body was cut.
    let cut = buf.len() as u64 >= limit && s.read(&mut [0u8; 1]).is_ok_and(|n| n > 0);
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    match (proto.starts_with("HTTP/"), code) {
        (true, Some(code)) => {
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .unwrap_or_default();
            Ok((code, body.to_string(), cut))
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP response: {:?}",
                status_line.chars().take(80).collect::<String>()
            ),
        )),
    }
}
