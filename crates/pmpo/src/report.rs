//! Rendering engine events for people: a live status line on a terminal,
//! one plain line per event otherwise.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmpo_engine::words::{self, human};
use pmpo_engine::{Event, EventKind, EventSink, ExecutionResults, StageStatus};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: permanent lines per finished stage plus a redrawn status line.
    Live,
    /// Not a terminal: one line per event.
    Plain,
    Quiet,
}

/// Colour only on a terminal, and never when NO_COLOR is set (any value).
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && std::io::stderr().is_terminal()
}

struct Live {
    current: Vec<(String, usize, Instant)>,
    total: usize,
    finished: usize,
    busy_time: Duration,
    ran: usize,
    line_shown: bool,
    spinner: usize,
}

pub struct Reporter {
    mode: Mode,
    color: bool,
    live: Arc<Mutex<Live>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    fn status_line(&mut self, color: bool) -> Option<String> {
        let (id, index, started) = self.current.first()?;
        let more = self.current.len() - 1;
        const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
        self.spinner = (self.spinner + 1) % FRAMES.len();
        let elapsed = started.elapsed();
        let mut line = format!(
            "{} [{index}/{}] {id}{}  running {}",
            FRAMES[self.spinner],
            self.total,
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            },
            human(elapsed)
        );
        if self.ran > 0 {
            let avg = self.busy_time / self.ran as u32;
            let remaining = self.total.saturating_sub(self.finished + 1) as u32;
            let left = avg * remaining + avg.saturating_sub(elapsed);
            line.push_str(&format!("  ~{} left", human(left)));
        }
        Some(if color {
            format!("\x1b[2m{line}\x1b[0m")
        } else {
            line
        })
    }
}

impl Reporter {
    pub fn start(mode: Mode, plan: &pmpo_engine::CheckedPlan, workspace: &Path) -> Reporter {
        let color = mode == Mode::Live && use_color();
        let total = plan.doc.plan.stages.len();
        if mode != Mode::Quiet {
            errln!(
                "pmpo: executing {} ({total} stage{}) for `{}` in {}",
                plan.display,
                if total == 1 { "" } else { "s" },
                plan.doc.specification.artifact_name,
                workspace.display()
            );
        }
        let live = Arc::new(Mutex::new(Live {
            current: Vec::new(),
            total,
            finished: 0,
            busy_time: Duration::ZERO,
            ran: 0,
            line_shown: false,
            spinner: 0,
        }));
        let ticker = (mode == Mode::Live).then(|| {
            let live = live.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(120));
                loop {
                    tick.tick().await;
                    let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(line) = l.status_line(color) {
                        err!("\r\x1b[2K{line}");
                        let _ = std::io::stderr().flush();
                        l.line_shown = true;
                    }
                }
            })
        });
        Reporter {
            mode,
            color,
            live,
            ticker,
        }
    }

    pub fn finish(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        let mut l = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if l.line_shown {
            err!("\r\x1b[2K");
            l.line_shown = false;
        }
    }

    /// A plain line of the reporter, painted when it interrupts a stage.
    fn paint_line(&self, e: &Event, line: &str) -> String {
        let parts = line.strip_prefix("  ").and_then(|l| l.split_once("  "));
        match (words::interruption(e.event), parts) {
            (Some(_), Some((head, rest))) => {
                let head = head.replacen('!', &self.paint("!", "33"), 1);
                format!("  {head}  {}", self.paint(rest, "33"))
            }
            _ => line.to_string(),
        }
    }

    /// The permanent line of a finished stage on a live terminal (a started
    /// stage joins the status line instead).
    fn live_line(&self, live: &mut Live, e: &Event) -> Option<String> {
        let id = e.stage_id.as_deref().unwrap_or("");
        let pos = words::position(e);
        let dur = words::duration(e);
        let msg = e.message.as_deref().unwrap_or("");
        match e.event {
            EventKind::TaskStarted => {
                live.current
                    .push((id.to_string(), e.index.unwrap_or(0), Instant::now()));
                None
            }
            EventKind::TaskCompleted if !msg.is_empty() => Some(format!(
                "  {} {pos} {id}  {}",
                self.paint("✓", "32"),
                self.paint(msg, "2")
            )),
            EventKind::TaskCompleted => {
                Some(format!("  {} {pos} {id}  {dur}", self.paint("✓", "32")))
            }
            EventKind::TaskFailed => Some(format!(
                "  {} {pos} {id}  {dur}  {}",
                self.paint("✗", "31"),
                self.paint(
                    &format!("{}: {msg}", e.status.map_or("FAILED", StageStatus::as_str)),
                    "31"
                )
            )),
            EventKind::TaskSkipped => Some(format!(
                "  {} {pos} {id}  {}",
                self.paint("-", "33"),
                self.paint(&format!("skipped: {msg}"), "2")
            )),
            _ => None,
        }
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

impl EventSink for Reporter {
    fn on_event(&mut self, e: &Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        let id = e.stage_id.as_deref().unwrap_or("");
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // The words are the engine's reporter's; this only places and paints them.
        let interrupts = words::interruption(e.event).is_some();
        if self.mode == Mode::Plain || interrupts || e.event == EventKind::ExecutionResumed {
            if interrupts && live.line_shown {
                err!("\r\x1b[2K");
                live.line_shown = false;
            }
            if let Some(line) = words::line(e) {
                errln!("{}", self.paint_line(e, &line));
            }
        } else if let Some(line) = self.live_line(&mut live, e) {
            if live.line_shown {
                err!("\r\x1b[2K");
                live.line_shown = false;
            }
            errln!("{line}");
        }
        if interrupts {
            return;
        }
        if matches!(e.event, EventKind::TaskCompleted | EventKind::TaskFailed)
            && e.status != Some(StageStatus::Cached)
        {
            live.ran += 1;
            live.busy_time += Duration::from_secs_f64(e.duration_ms.unwrap_or(0.0) / 1000.0);
        }
        if matches!(
            e.event,
            EventKind::TaskCompleted | EventKind::TaskFailed | EventKind::TaskSkipped
        ) {
            live.finished += 1;
            live.current.retain(|(c, _, _)| c != id);
        }
    }
}

/// Asks a person at the terminal what to do about a failed stage.
pub fn ask_person(req: &pmpo_engine::Intervention) -> pmpo_engine::Decision {
    use pmpo_engine::Decision;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\r\x1b[2K\nstage `{}` failed and asks for a person: {}",
        req.stage, req.error
    );
    if let Some(h) = &req.hint {
        let _ = writeln!(err, "  hint: {h}");
    }
    loop {
        let _ = write!(err, "[r]etry, [s]kip or [a]bort? ");
        let _ = err.flush();
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => return Decision::Abort,
            Ok(_) => {}
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "r" | "retry" => return Decision::Retry,
            "s" | "skip" => return Decision::Skip,
            "a" | "abort" => return Decision::Abort,
            _ => {}
        }
    }
}

/// The closing lines after a run.
pub fn print_summary(r: &ExecutionResults, workspace: &Path) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{}: {} in {}",
        r.status,
        r.summary.describe(),
        human(Duration::from_secs_f64(r.duration_ms / 1000.0))
    );
    for v in &r.violations {
        let what = if v.status == pmpo_engine::validation::ConstraintStatus::Violated {
            "violated"
        } else {
            "could not be checked"
        };
        let _ = writeln!(
            err,
            "  blocking constraint `{}` {what}: {}",
            v.constraint_id, v.description
        );
        for c in &v.checks {
            let _ = writeln!(err, "    {} {}: {}", c.check, c.status, c.message);
        }
    }
    if r.allowed_violations {
        let _ = writeln!(
            err,
            "  note: --allow-violations: the violations above do not fail the run"
        );
    }
    for e in r.errors.iter().take(20) {
        let _ = writeln!(err, "  error in `{}` ({}): {}", e.stage, e.kind, e.message);
        if let Some(h) = &e.hint {
            let _ = writeln!(err, "    hint: {h}");
        }
    }
    if r.errors.len() > 20 {
        let _ = writeln!(
            err,
            "  ... and {} more errors (see the results file)",
            r.errors.len() - 20
        );
    }
    for n in &r.notices {
        let _ = writeln!(err, "  note: {n}");
    }
    let _ = writeln!(
        err,
        "results: {}",
        workspace.join(pmpo_engine::RESULTS_FILE).display()
    );
    let _ = writeln!(err, "report: {}", report_command(&r.run_id, workspace));
}

/// The command that builds the HTML report of a run or an artifact (`-w`
/// only when the workspace is not the current directory).
pub fn report_command(target: &str, workspace: &Path) -> String {
    let quote = |s: &str| {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let mut cmd = format!("pmpo report {}", quote(target));
    if workspace != Path::new(".") && workspace != Path::new("") {
        cmd.push_str(&format!(" -w {}", quote(&workspace.to_string_lossy())));
    }
    cmd
}
