//! Images: `image_dimensions`, `image_format`, `aspect_ratio`.
//!
//! Sizes come from the file headers, never from decoding pixels. The file's
//! structure is still checked cheaply, so a truncated PNG (no IEND chunk, a
//! chunk running past the end), JPEG (no end-of-image marker) or GIF (no
//! trailer) fails instead of passing on an intact header.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use serde_json::{Map, Value, json};

use crate::formats::{FileVerdict, per_file};
use crate::fsx::{self, FileRef};
use crate::params::{self, Kind, get_strs, need_one, opt, parse_size, parse_wxh};
use crate::{CheckDef, CheckError, Ctx, Verdict};

/// What the header says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageInfo {
    pub format: String,
    pub width: u64,
    pub height: u64,
}

/// Reads an image's format and size from its header, and checks its structure,
/// reading only headers, chunk headers and the file's tail (never the pixels),
/// so a huge image costs a few reads.
pub(crate) fn probe(f: &FileRef) -> Result<ImageInfo, String> {
    if f.size == 0 {
        return Err("the file is empty".into());
    }
    let io = |e: std::io::Error| format!("cannot be read: {e}");
    let mut file = File::open(&f.abs).map_err(io)?;
    let mut head = vec![0u8; f.size.min(4096) as usize];
    file.read_exact(&mut head).map_err(io)?;
    let Some(kind) = imagesize::image_type(&head).ok() else {
        if looks_like_svg(&head, &f.rel) {
            let bytes = fsx::read_bytes(f, fsx::MAX_TEXT_BYTES).map_err(|e| e.to_string())?;
            return svg_size(&f.rel, bytes);
        }
        return Err("not an image in a known format (its header matches none)".into());
    };
    let format = format_name(&kind);
    structure(&format, &mut file, f.size).map_err(|e| match e {
        Broken::Io(e) => io(e),
        Broken::Why(w) => w,
    })?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let size = imagesize::reader_size(BufReader::new(file)).map_err(|e| match e {
        imagesize::ImageError::CorruptedImage => {
            format!("the {format} header is corrupt or truncated")
        }
        imagesize::ImageError::NotSupported => format!("cannot read the size of this {format}"),
        imagesize::ImageError::IoError(e) => format!("cannot read the header: {e}"),
    })?;
    Ok(ImageInfo {
        format,
        width: size.width as u64,
        height: size.height as u64,
    })
}

fn format_name(kind: &imagesize::ImageType) -> String {
    let dbg = format!("{kind:?}");
    dbg.split('(').next().unwrap_or(&dbg).to_ascii_lowercase()
}

enum Broken {
    Io(std::io::Error),
    Why(String),
}

impl From<std::io::Error> for Broken {
    fn from(e: std::io::Error) -> Self {
        Broken::Io(e)
    }
}

/// The last `n` bytes of a file.
fn tail(file: &mut File, size: u64, n: u64) -> std::io::Result<Vec<u8>> {
    let n = n.min(size);
    file.seek(SeekFrom::Start(size - n))?;
    let mut buf = vec![0u8; n as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Cheap structural checks that catch truncation without decoding.
fn structure(format: &str, file: &mut File, size: u64) -> Result<(), Broken> {
    let why = |w: String| Err(Broken::Why(w));
    match format {
        "png" => {
            // Walk the chunk headers: each is length (4), type (4), data, CRC (4).
            let mut at: u64 = 8;
            let mut first = true;
            loop {
                let mut hdr = [0u8; 8];
                if at + 8 > size {
                    return why(format!(
                        "truncated PNG: it ends at byte {size}, before the IEND chunk"
                    ));
                }
                file.seek(SeekFrom::Start(at))?;
                file.read_exact(&mut hdr)?;
                let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
                let kind = &hdr[4..8];
                let end = at + 12 + len;
                if end > size {
                    return why(format!(
                        "truncated PNG: chunk `{}` at byte {at} needs {end} bytes but the file has {size}",
                        String::from_utf8_lossy(kind)
                    ));
                }
                if first && kind != b"IHDR" {
                    return why("corrupt PNG: the first chunk is not IHDR".into());
                }
                first = false;
                if kind == b"IEND" {
                    return Ok(());
                }
                at = end;
            }
        }
        "jpeg" => {
            let t = tail(file, size, 1024)?;
            if t.windows(2).any(|w| w == [0xFF, 0xD9]) {
                Ok(())
            } else {
                why("truncated JPEG: no end-of-image marker (FF D9) at the end".into())
            }
        }
        "gif" => {
            let t = tail(file, size, 16)?;
            if t.contains(&0x3B) {
                Ok(())
            } else {
                why("truncated GIF: no trailer byte (0x3B) at the end".into())
            }
        }
        "webp" => {
            let mut hdr = [0u8; 8];
            file.seek(SeekFrom::Start(0))?;
            file.read_exact(&mut hdr)?;
            let riff = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
            if riff + 8 <= size {
                Ok(())
            } else {
                why(format!(
                    "truncated WebP: the RIFF header says {} bytes, the file has {size}",
                    riff + 8
                ))
            }
        }
        _ => Ok(()),
    }
}

fn looks_like_svg(bytes: &[u8], rel: &str) -> bool {
    if fsx::ext(rel) == "svg" {
        return true;
    }
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    head.trim_start().starts_with('<') && head.contains("<svg")
}

/// An SVG's size: its width/height attributes (px or unitless), else its viewBox.
fn svg_size(rel: &str, bytes: Vec<u8>) -> Result<ImageInfo, String> {
    let text = fsx::bytes_to_text(rel, bytes).map_err(|e| e.to_string())?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, opts)
        .map_err(|e| format!("not a valid SVG: not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" {
        return Err(format!(
            "not an SVG: the root element is <{}>",
            root.tag_name().name()
        ));
    }
    let px = |name: &str| -> Option<f64> {
        let v = root.attribute(name)?.trim();
        let v = v.strip_suffix("px").unwrap_or(v);
        v.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0)
    };
    let vb: Option<(f64, f64)> = root.attribute("viewBox").and_then(|vb| {
        let n: Vec<f64> = vb
            .split([' ', ',', '\t', '\n'])
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        (n.len() == 4 && n[2] > 0.0 && n[3] > 0.0).then_some((n[2], n[3]))
    });
    let (w, h) = match (px("width"), px("height"), vb) {
        (Some(w), Some(h), _) => (w, h),
        (_, _, Some(v)) => v,
        _ => return Err("the SVG has neither width/height in pixels nor a viewBox".into()),
    };
    Ok(ImageInfo {
        format: "svg".into(),
        width: w.round() as u64,
        height: h.round() as u64,
    })
}

fn canonical_format(s: &str) -> String {
    match s
        .trim()
        .trim_start_matches('.')
        .to_ascii_lowercase()
        .as_str()
    {
        "jpg" | "jpeg" | "image/jpeg" => "jpeg".into(),
        "tif" | "tiff" => "tiff".into(),
        "svg" | "svg+xml" | "image/svg+xml" => "svg".into(),
        "heic" | "heif" | "avif" => "heif".into(),
        other => other.trim_start_matches("image/").to_string(),
    }
}

pub(crate) const IMAGE_DIMENSIONS: CheckDef = CheckDef {
    name: "image_dimensions",
    aliases: &["image-dimensions", "dimensions", "image_size"],
    summary: "every image is exactly WxH (or each size of a list exists under a filename pattern)",
    params: &[
        opt(
            "path",
            Kind::Paths,
            "the image(s): a path or glob, or a list",
        ),
        opt("width", Kind::UInt, "the exact width in pixels"),
        opt("height", Kind::UInt, "the exact height in pixels"),
        opt(
            "size",
            Kind::Str,
            "the exact size as \"WxH\", e.g. \"512x512\"",
        ),
        opt(
            "sizes",
            Kind::SizeList,
            "sizes to find under `pattern`, e.g. [16, 32, \"120x40\"]",
        ),
        opt(
            "pattern",
            Kind::Str,
            "the file for each size, e.g. \"dist/logo-{size}.png\" ({size}, {width}, {height})",
        ),
    ],
    rules: |p| {
        let mut v = Vec::new();
        if p.contains_key("sizes") || p.contains_key("pattern") {
            for k in ["sizes", "pattern"] {
                if !p.contains_key(k) {
                    v.push(params::issue(
                        "",
                        format!("`sizes` and `pattern` go together: `{k}` is missing"),
                        Some("e.g. sizes: [16, 32], pattern: \"dist/logo-{size}.png\"".into()),
                    ));
                }
            }
            if let Some(pat) = p.get("pattern").and_then(Value::as_str)
                && !pat.contains('{')
            {
                v.push(params::issue(
                    "pattern",
                    format!("pattern `{pat}` has no {{size}}, {{width}} or {{height}} placeholder"),
                    None,
                ));
            }
        } else {
            v.extend(need_one(p, &["path"]));
            v.extend(need_one(p, &["width", "height", "size"]));
            if let Some(s) = p.get("size").and_then(Value::as_str)
                && let Err(e) = parse_wxh(s)
            {
                v.push(params::issue("size", e, None));
            }
        }
        v
    },
    run: image_dimensions,
};

fn image_dimensions(ctx: &Ctx<'_>, p: &Map<String, Value>) -> Result<Verdict, CheckError> {
    if let (Some(Value::Array(sizes)), Some(pattern)) =
        (p.get("sizes"), params::get_str(p, "pattern"))
    {
        let mut names = Vec::new();
        let mut want = std::collections::HashMap::new();
        for s in sizes {
            let (w, h) = parse_size(s).map_err(CheckError::Param)?;
            let size = if w == h {
                w.to_string()
            } else {
                format!("{w}x{h}")
            };
            let name = pattern
                .replace("{size}", &size)
                .replace("{width}", &w.to_string())
                .replace("{height}", &h.to_string());
            want.insert(name.clone(), (w, h));
            names.push(name);
        }
        let mut q = Map::new();
        q.insert("path".into(), json!(names));
        let mut verdict = per_file(ctx, &q, &|f| Ok(dims_of(f, want.get(&f.rel).copied())))?;
        if let Some(o) = verdict.evidence.as_object_mut() {
            o.insert("pattern".into(), json!(pattern));
            o.insert("sizes".into(), json!(sizes));
        }
        return Ok(verdict);
    }
    let (w, h) = match params::get_str(p, "size") {
        Some(s) => {
            let (w, h) = parse_wxh(s).map_err(CheckError::Param)?;
            (Some(w), Some(h))
        }
        None => (params::get_u64(p, "width"), params::get_u64(p, "height")),
    };
    per_file(ctx, p, &|f| Ok(dims_of_partial(f, w, h)))
}

fn dims_of(f: &FileRef, want: Option<(u64, u64)>) -> FileVerdict {
    match want {
        Some((w, h)) => dims_of_partial(f, Some(w), Some(h)),
        None => FileVerdict::bad("no expected size for this file", json!({})),
    }
}

fn dims_of_partial(f: &FileRef, w: Option<u64>, h: Option<u64>) -> FileVerdict {
    let info = match probe(f) {
        Ok(i) => i,
        Err(e) => return FileVerdict::bad(e, json!({})),
    };
    let want = format!(
        "{}x{}",
        w.map_or("*".into(), |x| x.to_string()),
        h.map_or("*".into(), |x| x.to_string())
    );
    let detail = json!({"format": info.format, "width": info.width, "height": info.height, "expected": want});
    let ok = w.is_none_or(|w| w == info.width) && h.is_none_or(|h| h == info.height);
    if ok {
        FileVerdict::ok(
            format!("{}x{} {}", info.width, info.height, info.format),
            detail,
        )
    } else {
        FileVerdict::bad(
            format!("{}x{}, expected {want}", info.width, info.height),
            detail,
        )
    }
}

pub(crate) const IMAGE_FORMAT: CheckDef = CheckDef {
    name: "image_format",
    aliases: &["image-format", "format"],
    summary: "every image's real format (from its header) is one of `format`",
    params: &[
        params::req(
            "path",
            Kind::Paths,
            "the image(s): a path or glob, or a list",
        ),
        params::req(
            "format",
            Kind::StrOrList,
            "png, jpeg, gif, webp, svg, bmp, ico, tiff... or a list",
        ),
    ],
    rules: crate::no_rules,
    run: |ctx, p| {
        let want: Vec<String> = get_strs(p, "format")
            .iter()
            .map(|s| canonical_format(s))
            .collect();
        let mut v = per_file(ctx, p, &|f| {
            Ok(match probe(f) {
                Err(e) => FileVerdict::bad(e, json!({})),
                Ok(info) => {
                    let detail =
                        json!({"format": info.format, "width": info.width, "height": info.height});
                    if want.contains(&info.format) {
                        FileVerdict::ok(
                            format!("{} ({}x{})", info.format, info.width, info.height),
                            detail,
                        )
                    } else {
                        FileVerdict::bad(
                            format!("is {}, expected {}", info.format, want.join(" or ")),
                            detail,
                        )
                    }
                }
            })
        })?;
        if let Some(o) = v.evidence.as_object_mut() {
            o.insert("expected".into(), json!(want));
        }
        Ok(v)
    },
};

fn parse_ratio(v: &Value) -> Result<f64, String> {
    let r = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.split_once([':', '/']) {
            Some((a, b)) => match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
                (Ok(a), Ok(b)) if b != 0.0 => Some(a / b),
                _ => None,
            },
            None => s.trim().parse().ok(),
        },
        _ => None,
    };
    r.filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("ratio {v} is not a positive number or \"W:H\" (e.g. \"16:9\")"))
}

pub(crate) const ASPECT_RATIO: CheckDef = CheckDef {
    name: "aspect_ratio",
    aliases: &["aspect-ratio"],
    summary: "every image's width/height equals `ratio` within `tolerance`",
    params: &[
        params::req(
            "path",
            Kind::Paths,
            "the image(s): a path or glob, or a list",
        ),
        params::req(
            "ratio",
            Kind::NumOrStr,
            "\"16:9\", \"1:1\" or a number (width / height)",
        ),
        opt(
            "tolerance",
            Kind::Num,
            "allowed relative difference (default 0.01 = 1%)",
        ),
    ],
    rules: |p| match p.get("ratio").map(parse_ratio) {
        Some(Err(e)) => vec![params::issue("ratio", e, None)],
        _ => Vec::new(),
    },
    run: |ctx, p| {
        let ratio =
            parse_ratio(p.get("ratio").unwrap_or(&Value::Null)).map_err(CheckError::Param)?;
        let tol = p
            .get("tolerance")
            .and_then(Value::as_f64)
            .unwrap_or(0.01)
            .abs();
        let mut v = per_file(ctx, p, &|f| {
            Ok(match probe(f) {
                Err(e) => FileVerdict::bad(e, json!({})),
                Ok(info) if info.height == 0 => {
                    FileVerdict::bad("the image has zero height", json!({}))
                }
                Ok(info) => {
                    let actual = info.width as f64 / info.height as f64;
                    let diff = (actual - ratio).abs() / ratio;
                    let detail = json!({"width": info.width, "height": info.height, "ratio": (actual * 10000.0).round() / 10000.0});
                    if diff <= tol {
                        FileVerdict::ok(
                            format!("{}x{} (ratio {actual:.4})", info.width, info.height),
                            detail,
                        )
                    } else {
                        FileVerdict::bad(
                            format!(
                                "{}x{} has ratio {actual:.4}, expected {ratio:.4} (±{:.1}%)",
                                info.width,
                                info.height,
                                tol * 100.0
                            ),
                            detail,
                        )
                    }
                }
            })
        })?;
        if let Some(o) = v.evidence.as_object_mut() {
            o.insert("expected_ratio".into(), json!(ratio));
            o.insert("tolerance".into(), json!(tol));
        }
        Ok(v)
    },
};
