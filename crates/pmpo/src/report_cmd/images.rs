//! Screenshots for the report: decoded, scaled down when wide, embedded once
//! as `data:` URIs, and compared pixel by pixel.

use std::collections::HashMap;

use base64::Engine as _;

/// The widest image the report embeds; wider ones are scaled down.
pub const MAX_WIDTH: u32 = 1280;
/// The tallest image the report embeds (a very long full-page screenshot is
/// cut there, with a note).
pub const MAX_HEIGHT: u32 = 4000;
/// A PNG larger than this is not read at all (the report says so).
const MAX_FILE: usize = 32 << 20;
/// Two pixels differ when a channel differs by more than this.
const TOLERANCE: u8 = 16;

/// An image decoded to 8-bit RGBA.
#[derive(Clone)]
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgba {
    fn px(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = ((y * self.width + x) * 4) as usize;
        self.data.get(i..i + 4).map(|p| [p[0], p[1], p[2], p[3]])
    }
}

/// Decodes a PNG (any colour type and depth) to RGBA.
pub fn decode(bytes: &[u8]) -> Result<Rgba, String> {
    if bytes.len() > MAX_FILE {
        return Err(format!(
            "{} bytes: larger than the {} MB the report reads",
            bytes.len(),
            MAX_FILE >> 20
        ));
    }
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits { bytes: 256 << 20 },
    );
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("cannot decode the PNG: {e}"))?;
    let raw = &buf[..info.buffer_size()];
    let data: Vec<u8> = match info.color_type {
        png::ColorType::Rgba => raw.to_vec(),
        png::ColorType::Rgb => raw
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        png::ColorType::Grayscale => raw.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::GrayscaleAlpha => raw
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0], p[1]])
            .collect(),
        png::ColorType::Indexed => return Err("an indexed PNG that did not expand".into()),
    };
    if data.len() != (info.width as usize) * (info.height as usize) * 4 {
        return Err("the PNG's pixel data has an unexpected size".into());
    }
    Ok(Rgba {
        width: info.width,
        height: info.height,
        data,
    })
}

/// Encodes RGBA pixels as a PNG.
pub fn encode(img: &Rgba) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    if let Ok(mut w) = enc.write_header() {
        let _ = w.write_image_data(&img.data);
    }
    out
}

/// Scales an image down to at most `max_w` wide (box filter: each output
/// pixel is the mean of the source pixels it covers) and cuts it at
/// `max_h` high. Returns it unchanged when it already fits.
pub fn fit(img: Rgba, max_w: u32, max_h: u32) -> Rgba {
    let img = if img.width > max_w {
        let scale = img.width as f64 / max_w as f64;
        let nh = ((img.height as f64 / scale).round() as u32).max(1);
        let mut data = Vec::with_capacity((max_w * nh * 4) as usize);
        for y in 0..nh {
            let y0 = (y as f64 * scale) as u32;
            let y1 = (((y + 1) as f64 * scale) as u32).clamp(y0 + 1, img.height);
            for x in 0..max_w {
                let x0 = (x as f64 * scale) as u32;
                let x1 = (((x + 1) as f64 * scale) as u32).clamp(x0 + 1, img.width);
                let mut sum = [0u32; 4];
                let mut n = 0u32;
                for sy in y0..y1 {
                    for sx in x0..x1 {
                        if let Some(p) = img.px(sx, sy) {
                            for c in 0..4 {
                                sum[c] += p[c] as u32;
                            }
                            n += 1;
                        }
                    }
                }
                let n = n.max(1);
                data.extend(sum.iter().map(|s| (s / n) as u8));
            }
        }
        Rgba {
            width: max_w,
            height: nh,
            data,
        }
    } else {
        img
    };
    if img.height > max_h {
        let keep = (img.width * max_h * 4) as usize;
        let mut data = img.data;
        data.truncate(keep);
        return Rgba {
            width: img.width,
            height: max_h,
            data,
        };
    }
    img
}

/// The difference of two screenshots: an image that shows the new one faded,
/// with the changed pixels in magenta, and the share of pixels that changed.
/// Images of different sizes are compared on the larger canvas: a pixel that
/// only one of them has counts as changed.
pub struct Diff {
    pub image: Rgba,
    pub changed: u64,
    pub total: u64,
    pub sizes_differ: bool,
}

impl Diff {
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.changed as f64 * 100.0 / self.total as f64
        }
    }
}

pub fn diff(before: &Rgba, after: &Rgba) -> Diff {
    let w = before.width.max(after.width);
    let h = before.height.max(after.height);
    let mut data = Vec::with_capacity((w * h * 4) as usize);
    let mut changed = 0u64;
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (before.px(x, y), after.px(x, y));
            let differs = match (a, b) {
                (Some(a), Some(b)) => a.iter().zip(b).any(|(p, q)| p.abs_diff(q) > TOLERANCE),
                _ => true,
            };
            if differs {
                changed += 1;
                data.extend([230, 0, 180, 255]);
            } else {
                // The unchanged page, light and grey, so the changes stand out.
                let p = b.unwrap_or([255; 4]);
                let grey = (p[0] as u32 * 3 + p[1] as u32 * 6 + p[2] as u32) / 10;
                let light = (200 + grey * 55 / 255) as u8;
                data.extend([light, light, light, 255]);
            }
        }
    }
    Diff {
        image: Rgba {
            width: w,
            height: h,
            data,
        },
        changed,
        total: w as u64 * h as u64,
        sizes_differ: before.width != after.width || before.height != after.height,
    }
}

/// What an embedded image became.
pub enum Embedded {
    /// The first time: the `data:` URI, its anchor id, and a note (scaled
    /// down, cut) when the picture is not the file as it is.
    New {
        uri: String,
        id: String,
        width: u32,
        height: u32,
        note: Option<String>,
    },
    /// The same bytes were embedded before, under this id (and size).
    Again { id: String, width: u32, height: u32 },
    /// It could not be read or decoded: why.
    Unreadable(String),
}

/// The images of one report, each embedded once (keyed by content digest).
#[derive(Default)]
pub struct Gallery {
    seen: HashMap<blake3::Hash, (String, u32, u32)>,
    /// Bytes of `data:` URIs embedded so far.
    pub bytes: usize,
    pub count: usize,
}

impl Gallery {
    /// Embeds a PNG file's bytes (scaled down when wide).
    pub fn embed(&mut self, bytes: &[u8]) -> Embedded {
        let key = blake3::hash(bytes);
        if let Some(again) = self.again(&key) {
            return again;
        }
        let img = match decode(bytes) {
            Ok(i) => i,
            Err(e) => return Embedded::Unreadable(e),
        };
        self.embed_decoded(key, img, Some(bytes))
    }

    /// Embeds pixels computed here (a difference image).
    pub fn embed_pixels(&mut self, img: Rgba) -> Embedded {
        let png = encode(&img);
        let key = blake3::hash(&png);
        if let Some(again) = self.again(&key) {
            return again;
        }
        self.embed_decoded(key, img, Some(&png))
    }

    fn again(&self, key: &blake3::Hash) -> Option<Embedded> {
        self.seen
            .get(key)
            .map(|(id, width, height)| Embedded::Again {
                id: id.clone(),
                width: *width,
                height: *height,
            })
    }

    fn embed_decoded(&mut self, key: blake3::Hash, img: Rgba, original: Option<&[u8]>) -> Embedded {
        let (w0, h0) = (img.width, img.height);
        let fitted = fit(img, MAX_WIDTH, MAX_HEIGHT);
        let mut notes = Vec::new();
        if fitted.width != w0 {
            notes.push(format!(
                "scaled down from {w0}x{h0} to {}px wide",
                fitted.width
            ));
        }
        let full_h = if fitted.width != w0 {
            ((h0 as f64) * fitted.width as f64 / w0 as f64).round() as u32
        } else {
            h0
        };
        if fitted.height < full_h {
            notes.push(format!("cut at {} px high", fitted.height));
        }
        let png = match original {
            Some(o) if notes.is_empty() => o.to_vec(),
            _ => encode(&fitted),
        };
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        self.count += 1;
        self.bytes += uri.len();
        let id = format!("img-{}", self.count);
        self.seen
            .insert(key, (id.clone(), fitted.width, fitted.height));
        Embedded::New {
            uri,
            id,
            width: fitted.width,
            height: fitted.height,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, c: [u8; 4]) -> Rgba {
        Rgba {
            width: w,
            height: h,
            data: (0..w * h).flat_map(|_| c).collect(),
        }
    }

    #[test]
    fn a_png_round_trips_and_a_wide_one_is_scaled_down() {
        let img = solid(2000, 10, [10, 20, 30, 255]);
        let back = decode(&encode(&img)).unwrap();
        assert_eq!((back.width, back.height), (2000, 10));
        let small = fit(back, 1000, 4000);
        assert_eq!((small.width, small.height), (1000, 5));
        assert_eq!(&small.data[..4], &[10, 20, 30, 255]);
        let cut = fit(solid(10, 50, [0; 4]), 100, 20);
        assert_eq!((cut.width, cut.height, cut.data.len()), (10, 20, 800));
    }

    #[test]
    fn the_diff_counts_changed_pixels_and_sizes_that_differ() {
        let a = solid(10, 10, [255; 4]);
        let mut b = a.clone();
        b.data[0..4].copy_from_slice(&[0, 0, 0, 255]);
        let d = diff(&a, &b);
        assert_eq!((d.changed, d.total), (1, 100));
        assert!(!d.sizes_differ);
        assert_eq!(&d.image.data[0..4], &[230, 0, 180, 255]);
        let same = diff(&a, &a);
        assert_eq!(same.changed, 0);
        let wider = diff(&a, &solid(20, 10, [255; 4]));
        assert_eq!((wider.changed, wider.total), (100, 200));
        assert!(wider.sizes_differ);
        assert!((wider.percent() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_same_bytes_are_embedded_once() {
        let png = encode(&solid(4, 4, [1, 2, 3, 255]));
        let mut g = Gallery::default();
        let Embedded::New { id, .. } = g.embed(&png) else {
            panic!("first embed")
        };
        match g.embed(&png) {
            Embedded::Again { id: again, .. } => assert_eq!(again, id),
            _ => panic!("embedded twice"),
        }
        assert!(matches!(g.embed(b"nope"), Embedded::Unreadable(_)));
        assert_eq!(g.count, 1);
    }
}
