//! `pmpo mcp`: a Model Context Protocol server over stdio, serving one
//! workspace to an agent host (Claude Code, Codex, Cursor, ...).
//!
//! The host calls tools (`tools.rs`), reads resources (`resources.rs`), and
//! drives refinements whose judgement phases it answers: through pending
//! questions, or directly through MCP sampling when the client declared that
//! capability (`refine.rs`, `sampling.rs`).
//!
//! Standard output is the protocol. So that nothing else can ever land there
//! (a note of a library, a stage's child process), the server keeps a private
//! copy of the stdout descriptor for the protocol and points descriptor 1 at
//! standard error before anything runs.
//!
//! Long work runs off the protocol task (its own thread or child process), so
//! the server keeps answering; it is cancelled cleanly, leaving state that
//! resumes, when the client cancels the request, closes its end (stdin
//! reaches its end) or the server is told to stop (SIGTERM, SIGINT).

mod plan_guard;
mod refine;
mod resources;
mod sampling;
#[cfg(test)]
mod tests;
mod tools;

use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::error::CliError;

#[derive(clap::Args)]
pub struct McpArgs {
    /// The workspace directory the server serves.
    #[arg(long, short = 'w', value_name = "DIR", default_value = ".")]
    pub workspace: PathBuf,
}

/// The server: one workspace, and the work it has started.
#[derive(Clone)]
pub struct Server {
    /// The workspace's canonical root.
    root: PathBuf,
    /// Cancelled when the client goes away or the server is told to stop;
    /// every job's token is a child of it.
    stop: CancellationToken,
    /// The threads running refinements, joined before the server exits (so
    /// no lock is left held by a thread cut short).
    jobs: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl ServerHandler for Server {
    fn get_info(&self) -> InitializeResult {
        let caps: ServerCapabilities = serde_json::from_value(serde_json::json!({
            "tools": {}, "resources": {}
        }))
        .unwrap_or_default();
        let mut info = InitializeResult::new(caps);
        info.server_info = Implementation::new("pmpo", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(INSTRUCTIONS.to_string());
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(tools::list())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(tools::call(self, request, context).await.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.root)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.root, &request.uri).map(Into::into)
    }
}

const INSTRUCTIONS: &str = "pmpo refines named artifacts (logos, pages, prompts, code) and verifies them. \
Call `refine` with a name (and type and inputs for a new artifact); when its result has `pending`, \
answer the question with `answer` (JSON satisfying `pending.schema`), and repeat until `outcome` is \
`converged` or another final state. Measured constraints are not yours to judge: checks decide them.";

/// Reads the protocol's input and cancels `on_end` when it ends: a client
/// that closed its end stops the work it started at once.
struct EndWatch<R> {
    inner: R,
    on_end: CancellationToken,
}

impl<R: AsyncRead + Unpin> AsyncRead for EndWatch<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.on_end.cancel();
            }
            Poll::Ready(Err(_)) => self.on_end.cancel(),
            _ => {}
        }
        polled
    }
}

/// Keeps the real standard output for the protocol and points descriptor 1
/// at standard error: nothing but the protocol can reach the client.
fn protocol_stdout() -> Result<std::fs::File, CliError> {
    // SAFETY: dup and dup2 on the process's own standard descriptors; the
    // duplicate is owned by the returned File alone.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(CliError::failed(format!(
                "cannot keep standard output for the protocol: {}",
                std::io::Error::last_os_error()
            )));
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::dup2(2, 1) < 0 {
            return Err(CliError::failed(format!(
                "cannot point standard output at standard error: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

/// `pmpo mcp`: serves until the client goes away; exit 0, or 2 for a bad
/// workspace.
pub fn run(a: McpArgs) -> u8 {
    let root = match pmpo_store::Workspace::open(&a.workspace) {
        Ok(ws) => ws.root().to_path_buf(),
        Err(_) if !a.workspace.is_dir() => {
            return crate::not_a_directory_error(&a.workspace).report();
        }
        Err(e) => return CliError::invalid(e).hint("pass --workspace DIR").report(),
    };
    let out = match protocol_stdout() {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return CliError::failed(format!("cannot start the async runtime: {e}")).report();
        }
    };
    let server = Server {
        root,
        stop: CancellationToken::new(),
        jobs: Arc::default(),
    };
    let code = runtime.block_on(serve(server.clone(), out));
    // The jobs saw `stop` and end; wait for them so their locks are released.
    let jobs: Vec<_> = server
        .jobs
        .lock()
        .map(|mut j| j.drain(..).collect())
        .unwrap_or_default();
    for j in jobs {
        let _ = j.join();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn serve(server: Server, out: std::fs::File) -> u8 {
    let stop = server.stop.clone();
    let input = EndWatch {
        inner: tokio::io::stdin(),
        on_end: stop.clone(),
    };
    let output = tokio::fs::File::from_std(out);
    let on_signal = stop.clone();
    let _signals = crate::signals::on_terminating_signals(move || on_signal.cancel());
    let running = match server.serve((input, output)).await {
        Ok(r) => r,
        Err(e) => {
            // The client went away before the handshake: nothing to serve.
            errln!("pmpo mcp: the session did not start: {e}");
            return crate::EXIT_OK;
        }
    };
    let cancel = running.cancellation_token();
    let wait = running.waiting();
    tokio::pin!(wait);
    tokio::select! {
        _ = &mut wait => {}
        _ = stop.cancelled() => {
            // The jobs stop at once; give their handlers a moment to answer
            // with where they stopped, then end the session.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), &mut wait).await;
            cancel.cancel();
        }
    }
    stop.cancel();
    crate::EXIT_OK
}
