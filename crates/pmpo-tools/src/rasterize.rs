//! The `rasterize` tool: SVG -> PNG at a list of sizes, with resvg (pure
//! Rust, no system libraries; text uses the system's fonts).
//!
//! ```yaml
//! with:
//!   input: dist/logo.svg
//!   sizes: [16, 32, 48, 64, 128, 192, 256, 512]   # the default
//!   output: dist/logo-{size}.png                  # default: next to the SVG, `<stem>-{size}.png`
//!   square: true                                  # default; false: `size` is the width, height follows
//! ```
//!
//! With `square: true` each PNG is `size` x `size`: the drawing is scaled to
//! fit and centred, keeping its aspect ratio (icons). With `square: false`
//! the PNG is `size` pixels wide and as high as the drawing's aspect ratio
//! makes it (figures). Named outputs: `images` (`[{size, path}]`),
//! `sizes`, `svg`, `width` and `height` (of the SVG).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use pmpo_plan::InputIssue;
use pmpo_store::{Durability, Workspace};
use resvg::{tiny_skia, usvg};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::inputs::{invalid, io_error, read_file};
use crate::typed::{self, Text};
use crate::{ErrorClass, Tool, ToolContext, ToolError, ToolOutcome, issue};

/// The `with:` of a `rasterize` stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RasterizeInputs {
    /// The SVG.
    input: Text,
    /// The pixel sizes, [`DEFAULT_SIZES`] when absent.
    #[serde(default = "default_sizes", deserialize_with = "sizes")]
    sizes: Vec<u32>,
    /// Where the PNGs go, with `{size}` (default: next to the SVG).
    output: Option<String>,
    /// Square icons (the default) or figures as wide as `size`.
    square: Option<bool>,
}

impl typed::Inputs for RasterizeInputs {
    const TOOL: &'static str = "rasterize";
    const PATHS: &'static [&'static str] = &["input", "output"];
}

fn default_sizes() -> Vec<u32> {
    DEFAULT_SIZES.to_vec()
}

fn sizes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    typed::parsed(d, parse_sizes)
}

/// The sizes of a favicon/app-icon set.
pub const DEFAULT_SIZES: &[u32] = &[16, 32, 48, 64, 128, 192, 256, 512];
/// The largest side accepted (a 8192 x 8192 RGBA image is 256 MiB).
pub const MAX_SIZE: u32 = 8192;

pub struct RasterizeTool;

/// One rendered PNG.
#[derive(Debug, Clone)]
pub struct RenderedPng {
    pub size: u32,
    pub png: Vec<u8>,
}

/// The system font database, loaded once per process and only for SVGs with text.
fn system_fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            Arc::new(db)
        })
        .clone()
}

/// Parses an SVG; the error carries the parser's message and position.
/// An `<image>` that names a file is not loaded (embedded `data:` images are).
pub fn parse_svg(data: &[u8], name: &str) -> Result<usvg::Tree, ToolError> {
    parse_svg_in(data, name, None)
}

/// The workspace-relative file an `<image href>` of the SVG at `svg_rel`
/// names: relative to the SVG's directory, never absolute, never above the
/// workspace, never a URL.
fn image_file(svg_rel: &str, href: &str) -> Option<String> {
    if href.is_empty() || href.starts_with('/') || href.contains(':') || href.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = svg_rel.split('/').collect();
    parts.pop();
    for part in href.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// [`parse_svg`] for an SVG of a workspace: an `<image>` that names a file is
/// read as tools read (inside the workspace, never through a link leading
/// out of it); any other file reference is ignored, as usvg would ignore a
/// missing one.
pub fn parse_svg_in(
    data: &[u8],
    name: &str,
    workspace: Option<(&Workspace, &str)>,
) -> Result<usvg::Tree, ToolError> {
    let mut options = usvg::Options::default();
    let from_workspace = workspace.map(|(ws, rel)| (ws.clone(), rel.to_string()));
    // usvg would read any path on the machine by default.
    options.image_href_resolver.resolve_string = Box::new(move |href, opts| {
        let (ws, svg_rel) = from_workspace.as_ref()?;
        let bytes = ws.read(&image_file(svg_rel, href)?).ok()?;
        (usvg::ImageHrefResolver::default_data_resolver())("text/plain", Arc::new(bytes), opts)
    });
    // Loading fonts costs tens of milliseconds: only pay it when there is text.
    if data.windows(5).any(|w| w == b"<text") {
        options.fontdb = system_fonts();
    }
    usvg::Tree::from_data(data, &options).map_err(|e| {
        invalid(format!("`{name}` is not a valid SVG: {e}")).hint(
            "fix the SVG at the position shown (it must be well-formed XML with an <svg> root)",
        )
    })
}

/// Renders a parsed SVG to a PNG: `size` x `size`, scaled to fit and
/// centred (`square`), or `size` wide with the drawing's aspect ratio.
pub fn render_png(tree: &usvg::Tree, size: u32, square: bool) -> Result<Vec<u8>, String> {
    let svg = tree.size();
    let (width, height) = if square {
        (size, size)
    } else {
        let h = (size as f32 * svg.height() / svg.width()).round().max(1.0);
        (size, (h as u32).min(MAX_SIZE))
    };
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .ok_or_else(|| format!("cannot allocate a {width}x{height} image"))?;
    let scale = (width as f32 / svg.width()).min(height as f32 / svg.height());
    let dx = (width as f32 - svg.width() * scale) / 2.0;
    let dy = (height as f32 - svg.height() * scale) / 2.0;
    let transform = tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy);
    resvg::render(tree, transform, &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| format!("cannot encode a {size}px PNG: {e}"))
}

/// Parses and renders every size (CPU work: call it off the async threads).
pub fn rasterize(
    data: &[u8],
    name: &str,
    sizes: &[u32],
    square: bool,
) -> Result<Vec<RenderedPng>, ToolError> {
    let tree = parse_svg(data, name)?;
    sizes
        .iter()
        .map(|&size| {
            render_png(&tree, size, square)
                .map(|png| RenderedPng { size, png })
                .map_err(|e| ToolError::new(ErrorClass::Io, e))
        })
        .collect()
}

fn default_pattern(input: &str) -> String {
    let (dir, file) = match input.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), input),
    };
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    format!("{dir}{stem}-{{size}}.png")
}

fn parse_sizes(v: Option<&Value>) -> Result<Vec<u32>, String> {
    let Some(v) = v else {
        return Ok(DEFAULT_SIZES.to_vec());
    };
    let items = v
        .as_array()
        .ok_or("`sizes` must be a list of pixel sizes")?;
    if items.is_empty() {
        return Err("`sizes` is empty".into());
    }
    let mut sizes = Vec::with_capacity(items.len());
    for item in items {
        match item.as_u64() {
            Some(n) if (1..=MAX_SIZE as u64).contains(&n) => sizes.push(n as u32),
            _ => {
                return Err(format!(
                    "`sizes` holds {item}, not a whole number of pixels from 1 to {MAX_SIZE}"
                ));
            }
        }
    }
    Ok(sizes)
}

fn write_all(
    ws: &Workspace,
    pattern: &str,
    images: &[RenderedPng],
) -> Result<Vec<(u32, String)>, ToolError> {
    let mut written = Vec::with_capacity(images.len());
    for image in images {
        let path = pattern.replace("{size}", &image.size.to_string());
        ws.write_atomic(&path, &image.png, Durability::Relaxed)
            .map_err(|e| io_error("write", &path, e))?;
        written.push((image.size, path));
    }
    Ok(written)
}

#[async_trait]
impl Tool for RasterizeTool {
    fn name(&self) -> &'static str {
        "rasterize"
    }
    fn written_paths(&self, inputs: &Map<String, Value>) -> Vec<String> {
        let pattern = match inputs.get("output").and_then(Value::as_str) {
            Some(p) => p.to_string(),
            None => match inputs.get("input").and_then(Value::as_str) {
                Some(input) => default_pattern(input),
                None => return Vec::new(),
            },
        };
        match parse_sizes(inputs.get("sizes")) {
            Ok(sizes) => sizes
                .iter()
                .map(|s| pattern.replace("{size}", &s.to_string()))
                .collect(),
            Err(_) => vec![pattern],
        }
    }

    fn check_inputs(&self, inputs: &Map<String, Value>) -> Vec<InputIssue> {
        let mut issues = typed::check::<RasterizeInputs>(inputs);
        if let Some(Value::String(p)) = inputs.get("output")
            && !crate::inputs::is_reference(&Value::String(p.clone()))
            && !p.contains("{size}")
            && parse_sizes(inputs.get("sizes")).is_ok_and(|s| s.len() > 1)
        {
            issues.push(issue(
                "output",
                "`output` must contain `{size}` when there are several sizes",
                Some("e.g. `output: dist/logo-{size}.png`"),
            ));
        }
        if let Some(issue) = issues.iter_mut().find(|i| i.message.starts_with("`sizes`")) {
            issue.help = Some("e.g. `sizes: [16, 32, 64]`; leave it out for 16 to 512".into());
        }
        issues
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        inputs: &Map<String, Value>,
    ) -> Result<ToolOutcome, ToolError> {
        let started = Instant::now();
        let with: RasterizeInputs = typed::decode(inputs)?;
        let (input, sizes) = (with.input.0, with.sizes);
        let square = with.square.unwrap_or(true);
        let pattern = with.output.unwrap_or_else(|| default_pattern(&input));
        if sizes.len() > 1 && !pattern.contains("{size}") {
            return Err(invalid(
                "`output` must contain `{size}` when there are several sizes",
            ));
        }
        let data = read_file(ctx.workspace, &input)?;
        let ws = ctx.workspace.clone();
        let (name, sizes_c, pattern_c) = (input.clone(), sizes.clone(), pattern.clone());
        // Parsing, rendering, encoding and writing are CPU and disk work.
        let (written, width, height) = tokio::task::spawn_blocking(move || {
            let tree = parse_svg_in(&data, &name, Some((&ws, &name)))?;
            let (w, h) = (tree.size().width(), tree.size().height());
            let mut images = Vec::with_capacity(sizes_c.len());
            for &size in &sizes_c {
                let png = render_png(&tree, size, square)
                    .map_err(|e| ToolError::new(ErrorClass::Io, e))?;
                images.push(RenderedPng { size, png });
            }
            write_all(&ws, &pattern_c, &images).map(|w2| (w2, w, h))
        })
        .await
        .map_err(|e| ToolError::new(ErrorClass::Io, format!("rasterizing stopped: {e}")))??;

        let images: Vec<Value> = written
            .iter()
            .map(|(size, path)| json!({"size": size, "path": path}))
            .collect();
        let mut summary = format!(
            "rasterized {input} ({width}x{height}) to {} PNG sizes in {:.1} ms\n",
            written.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        for (size, path) in &written {
            summary.push_str(&format!("  {size:>4} px  {path}\n"));
        }
        let mut outputs = Map::new();
        outputs.insert("images".into(), Value::Array(images));
        outputs.insert("sizes".into(), json!(sizes));
        outputs.insert("svg".into(), json!(input));
        outputs.insert("width".into(), json!(width));
        outputs.insert("height".into(), json!(height));
        Ok(ToolOutcome::finished(
            started,
            &summary,
            outputs,
            json!({"input": input, "sizes": sizes, "output": pattern}),
            Vec::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGO: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 50">
<rect width="100" height="50" fill="#ff0000"/></svg>"##;

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.width, info.height, buf)
    }

    #[test]
    fn renders_every_size_square_and_centred() {
        let out = rasterize(LOGO.as_bytes(), "logo.svg", DEFAULT_SIZES, true).unwrap();
        assert_eq!(out.len(), 8);
        for r in &out {
            let (w, h, _) = decode(&r.png);
            assert_eq!((w, h), (r.size, r.size));
        }
        // 100x50 in 64x64: red band in the middle rows, transparent top row.
        let (_, _, px) = decode(&out[3].png);
        let at = |x: usize, y: usize| &px[(y * 64 + x) * 4..(y * 64 + x) * 4 + 4];
        assert_eq!(at(32, 32), &[255, 0, 0, 255]);
        assert_eq!(at(32, 2)[3], 0);
        // Not square: the width is the size, the height follows.
        let out = rasterize(LOGO.as_bytes(), "logo.svg", &[200], false).unwrap();
        let (w, h, _) = decode(&out[0].png);
        assert_eq!((w, h), (200, 100));
    }

    #[test]
    fn invalid_svg_names_the_position() {
        let err = rasterize(
            b"<svg xmlns='http://www.w3.org/2000/svg'>\n<rect></svg>",
            "bad.svg",
            &[16],
            true,
        )
        .unwrap_err();
        assert!(err.message.contains("bad.svg"), "{}", err.message);
        assert!(err.message.contains("2:"), "{}", err.message);
    }

    #[test]
    fn inputs() {
        let t = RasterizeTool;
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert!(t.check_inputs(&m(json!({"input": "a.svg"}))).is_empty());
        assert_eq!(
            t.check_inputs(&m(json!({"input": "a.svg", "output": "x.png"})))
                .len(),
            1
        );
        assert!(
            t.check_inputs(&m(
                json!({"input": "a.svg", "output": "x.png", "sizes": [32]})
            ))
            .is_empty()
        );
        assert_eq!(
            t.check_inputs(&m(json!({"input": "a.svg", "sizes": [0]})))
                .len(),
            1
        );
        assert_eq!(default_pattern("dist/logo.svg"), "dist/logo-{size}.png");
    }

    #[test]
    fn inputs_are_read_through_the_struct() {
        let t = RasterizeTool;
        let m = |v: Value| v.as_object().cloned().unwrap();
        let issues = t.check_inputs(&m(json!({
            "input": "a.svg", "sizes": [], "square": "yes", "sqare": true
        })));
        let found: Vec<(String, Option<String>)> =
            issues.into_iter().map(|i| (i.message, i.help)).collect();
        assert_eq!(
            found,
            [
                (
                    "unknown input `sqare` for tool `rasterize`".to_string(),
                    Some(
                        "did you mean `square`? the `rasterize` tool takes: input, sizes, output, square"
                            .to_string()
                    )
                ),
                (
                    "`sizes` is empty".to_string(),
                    Some("e.g. `sizes: [16, 32, 64]`; leave it out for 16 to 512".to_string())
                ),
                ("`square` must be true or false".to_string(), None),
            ]
        );
        // A reference is resolved at run time; the run reads the same struct.
        assert!(t.check_inputs(&m(json!({"input": "$draw.svg"}))).is_empty());
        let with: RasterizeInputs = typed::decode(&m(json!({"input": "a.svg"}))).unwrap();
        assert_eq!(with.sizes, DEFAULT_SIZES);
        let err = typed::decode::<RasterizeInputs>(&m(json!({"input": "a.svg", "sizes": [0]})));
        assert_eq!(
            err.unwrap_err().message,
            "`sizes` holds 0, not a whole number of pixels from 1 to 8192"
        );
    }
}
