//! The image adapter: a raster or SVG image's format, dimensions and size
//! budget.

use serde_json::json;

use super::{
    AdapterError, AdapterInput, Builder, Scope, copy_stage, ext, file_name, need_input, opt_f64,
    opt_str, stem,
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
            json!({
                "id": "rasterize", "depends_on": ["import"], "tool": "rasterize",
                "description": "Rasterize the SVG",
                "with": {"input": copy, "sizes": [size], "square": false, "output": s.path(&format!("{}-{{size}}.png", stem(img)))},
                "outputs": [png],
            }),
        );
        b.d.required_files.push(png.clone());
        png
    } else {
        copy.clone()
    };
    b.constraint(
        s,
        "format",
        "blocking",
        "technical",
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
        "medium",
        "performance",
        &format!("The image file stays under {max} bytes"),
        Some(("max_file_size", json!({"path": raster, "max_bytes": max}))),
    );
    if let (Some(w), Some(h)) = (opt_f64(input, "width"), opt_f64(input, "height")) {
        b.constraint(
            s,
            "dimensions",
            "high",
            "structural",
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
            "high",
            "visual",
            &format!("The image has the aspect ratio {ratio}"),
            Some(("aspect_ratio", json!({"path": raster, "ratio": ratio}))),
        );
    }
    b.d.required_files.push(copy);
    Ok(())
}
