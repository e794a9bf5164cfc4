//! The image adapter: a raster or SVG image's format, dimensions and size
//! budget.

use serde_json::json;

use pmpo_plan::{ConstraintKind, Severity};

use super::values::{StageValue, copy_stage, stage};
use super::{
    AdapterError, AdapterInput, Builder, Scope, ext, file_name, need_input, opt_f64, opt_str, stem,
};

pub(super) fn image(
    b: &mut Builder,
    s: &Scope,
    input: &AdapterInput<'_>,
) -> Result<(), AdapterError> {
    let img = need_input(
        input,
        "an image",
        &["png", "jpg", "jpeg", "webp", "gif", "svg"],
    )?;
    let copy = s.path(&file_name(img));
    b.stage(s, copy_stage("import", img, &copy));
    let raster = if ext(img) == "svg" {
        let size = opt_f64(input, "size").unwrap_or(1024.0) as u64;
        let png = s.path(&format!("{}-{size}.png", stem(img)));
        b.stage(
            s,
            stage("rasterize", "rasterize", "Rasterize the SVG")
                .after(["import"])
                .with(json!({"input": copy, "sizes": [size], "square": false, "output": s.path(&format!("{}-{{size}}.png", stem(img)))}))
                .writes([png.as_str()]),
        );
        b.d.required_files.push(png.clone());
        png
    } else {
        copy.clone()
    };
    b.constraint(
        s,
        "format",
        Severity::Blocking,
        ConstraintKind::Technical,
        "The image is a PNG, JPEG, WebP or GIF file whose content matches its name",
        Some((
            "image_format",
            json!({"path": raster, "format": ["png", "jpeg", "webp", "gif"]}),
        )),
    );
    let max = opt_f64(input, "max_bytes").unwrap_or(2_000_000.0) as u64;
    b.constraint(
        s,
        "size-budget",
        Severity::Medium,
        ConstraintKind::Performance,
        &format!("The image file stays under {max} bytes"),
        Some(("max_file_size", json!({"path": raster, "max_bytes": max}))),
    );
    if let (Some(w), Some(h)) = (opt_f64(input, "width"), opt_f64(input, "height")) {
        b.constraint(
            s,
            "dimensions",
            Severity::High,
            ConstraintKind::Structural,
            &format!("The image is {w} x {h} pixels"),
            Some((
                "image_dimensions",
                json!({"path": raster, "width": w as u64, "height": h as u64}),
            )),
        );
    }
    if let Some(ratio) = opt_str(input, "aspect") {
        b.constraint(
            s,
            "aspect",
            Severity::High,
            ConstraintKind::Visual,
            &format!("The image has the aspect ratio {ratio}"),
            Some(("aspect_ratio", json!({"path": raster, "ratio": ratio}))),
        );
    }
    b.d.required_files.push(copy);
    Ok(())
}
