//! Speed of the artifact tools, on this machine:
//!
//! - rasterizing a typical logo SVG (the logo example's) to the 8 default
//!   sizes, in memory and through the tool (files written);
//! - one preview, and three previews in one run sharing one browser, each
//!   measured from a cold start (browser launch included) to the last report
//!   written.
//!
//! `cargo bench -p pmpo-tools --bench artifacts` (needs Chromium for the previews).

use std::path::Path;
use std::time::{Duration, Instant};

use pmpo_store::Workspace;
use pmpo_tools::preview::PreviewTool;
use pmpo_tools::rasterize::{DEFAULT_SIZES, RasterizeTool, rasterize};
use pmpo_tools::{Tool, ToolContext};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256" width="256" height="256">
  <defs>
    <linearGradient id="sky" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="#38bdf8"/><stop offset="1" stop-color="#6366f1"/>
    </linearGradient>
  </defs>
  <rect x="16" y="16" width="224" height="224" rx="48" fill="url(#sky)"/>
  <circle cx="170" cy="92" r="30" fill="#fde68a"/>
  <path d="M36 200 L104 98 L140 150 L160 122 L220 200 Z" fill="#0f172a"/>
  <path d="M104 98 L122 125 L110 121 L100 132 L90 119 Z" fill="#ffffff" fill-opacity="0.9"/>
</svg>"##;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn inputs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

async fn previews(pages: &[&str], root: &Path) -> (f64, f64, Vec<f64>) {
    let ws = Workspace::open(root).unwrap();
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        workspace: &ws,
        run_id: "bench",
        stage_id: "preview",
        timeout: Duration::from_secs(60),
        cancel: &cancel,
        tool: "test",
        spec: None,
        validation: &[],
        description: "",
        confine: None,
    };
    let tool = PreviewTool::new();
    let start = Instant::now();
    let mut each = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        let t = Instant::now();
        let out = tool
            .invoke(&ctx, &inputs(json!({"input": page, "id": format!("p{i}")})))
            .await
            .unwrap();
        assert_eq!(out.outputs["status"], "success", "{:?}", out.stderr.text());
        each.push(ms(t.elapsed()));
    }
    let total = ms(start.elapsed());
    let t = Instant::now();
    tool.end_run().await;
    (total, ms(t.elapsed()), each)
}

fn main() {
    // Rasterizing.
    let runs = 30;
    let mut mem = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = rasterize(LOGO.as_bytes(), "logo.svg", DEFAULT_SIZES, true).unwrap();
        assert_eq!(out.len(), 8);
        mem.push(ms(t.elapsed()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "logo.svg", LOGO);
    let ws = Workspace::open(dir.path()).unwrap();
    let mut tool_runs = Vec::new();
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let ctx = ToolContext {
            workspace: &ws,
            run_id: "bench",
            stage_id: "sizes",
            timeout: Duration::from_secs(60),
            cancel: &cancel,
            tool: "test",
            spec: None,
            validation: &[],
            description: "",
            confine: None,
        };
        for _ in 0..runs {
            let t = Instant::now();
            RasterizeTool
                .invoke(
                    &ctx,
                    &inputs(json!({"input": "logo.svg", "output": "dist/logo-{size}.png"})),
                )
                .await
                .unwrap();
            tool_runs.push(ms(t.elapsed()));
        }
    });
    println!("rasterize: logo SVG to 8 sizes (16..512), median of {runs}");
    println!(
        "  in memory (parse + render + PNG encode): {:7.1} ms",
        median(mem)
    );
    println!(
        "  rasterize tool (+ 8 atomic file writes): {:7.1} ms",
        median(tool_runs)
    );

    // Previews.
    if pmpo_tools::preview::browser::find_chromium(None).is_err() {
        println!("previews: skipped (Chromium not found)");
        return;
    }
    let root = dir.path();
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ui/pages");
    for f in [
        "card.html",
        "broken.html",
        "fragments/stats.html",
        "fragments/details.html",
    ] {
        write(
            root,
            &format!("pages/{f}"),
            &std::fs::read_to_string(ui.join(f)).unwrap(),
        );
    }
    write(
        root,
        "pages/plain.html",
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h1>Plain page</h1><p>Text only.</p></body></html>",
    );
    let pages = ["pages/card.html", "pages/broken.html", "pages/plain.html"];
    let rounds = 5;
    let mut one = Vec::new();
    let mut three = Vec::new();
    let mut close = Vec::new();
    let mut per_page: Vec<Vec<f64>> = vec![Vec::new(); 3];
    rt.block_on(async {
        for _ in 0..rounds {
            let (t1, c1, _) = previews(&pages[..1], root).await;
            one.push(t1);
            close.push(c1);
            let (t3, c3, each) = previews(&pages, root).await;
            three.push(t3);
            close.push(c3);
            for (i, e) in each.into_iter().enumerate() {
                per_page[i].push(e);
            }
        }
    });
    println!("previews: cold browser start included, median of {rounds} runs");
    println!(
        "  one preview (HTMX card):                 {:7.0} ms",
        median(one)
    );
    println!(
        "  three previews in one run, one browser:  {:7.0} ms",
        median(three)
    );
    for (i, p) in pages.iter().enumerate() {
        println!("    {:<38} {:7.0} ms", p, median(per_page[i].clone()));
    }
    println!(
        "  closing the browser (end of run):        {:7.0} ms",
        median(close)
    );
}
