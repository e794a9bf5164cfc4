//! Findings made once a page was rendered: what a `.tsx` entry's host page
//! mounted, and why a blank screenshot is blank, from the facts the driver
//! read in the settled page (`driver/dom_facts.rs`) and what the report
//! already holds.

use serde_json::Value;

use super::report::{Finding, ImageInfo, PreviewReport};

/// Adds the findings of a rendered page to `report` (its `image` is set).
/// `dom` is `None` when the page could not be asked (screenshot mode).
pub fn after_render(report: &mut PreviewReport, dom: Option<&Value>) {
    if dom.and_then(|d| d.get("alpine")).and_then(Value::as_str) == Some("page") {
        // pmpo's copy stood aside: the page started Alpine itself.
        report
            .findings
            .retain(|f| !(f.code == "runtime-added" && f.message.contains("Alpine.js")));
        report
            .notes
            .push("the page's own scripts started Alpine.js, so pmpo's copy stood aside".into());
    }
    if let Some(mount) = dom.and_then(|d| d.get("mount")).filter(|m| m.is_object()) {
        report.findings.extend(mount_finding(mount));
    }
    if let Some(image) = report.image.clone().filter(|i| i.blank) {
        let causes = blank_causes(report, dom);
        report.findings.push(blank_finding(&image, &causes));
    } else if let Some(text) = dom.and_then(invisible_text) {
        report.findings.push(Finding::new(
            "invisible-text",
            "warning",
            format!("{text}: a person sees nothing there"),
            Some("give the text a colour that differs from its background (a background taken from a CSS variable the page never defines is transparent)".into()),
        ));
    }
}

/// Elements whose text has its background's colour (or none), named with both colours.
fn invisible_text(dom: &Value) -> Option<String> {
    let list = dom
        .get("invisible_text")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())?;
    let shown: Vec<String> = list
        .iter()
        .map(|i| {
            let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
            format!(
                "`{}` ({} on {})",
                s("selector"),
                s("color"),
                s("background")
            )
        })
        .collect();
    Some(format!(
        "text drawn in the colour of its background: {}",
        shown.join(", ")
    ))
}

fn str_list(v: Option<&Value>) -> String {
    let names: Vec<&str> = v
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

const MOUNT_HINT: &str = "export the component as the module's default export (`export default function App() { ... }`), or render into `#root` yourself; pmpo calls the component with no props";

/// What the host page of a `.tsx`/`.jsx` entry did about `#root`.
fn mount_finding(mount: &Value) -> Option<Finding> {
    let why = mount.get("why").and_then(Value::as_str);
    let exports = str_list(mount.get("exports"));
    let component = mount
        .get("component")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let nothing = |message: String| {
        Some(Finding::new(
            "nothing-to-mount",
            "error",
            message,
            Some(MOUNT_HINT.into()),
        ))
    };
    match why {
        None if mount.get("mounted") == Some(&Value::Bool(true)) => Some(Finding::new(
            "mounted",
            "info",
            format!(
                "`#root` was empty after the bundle ran: pmpo mounted the exported component `{component}` (no props) with {}",
                if mount.get("with").and_then(Value::as_str) == Some("react-dom") {
                    "react-dom's createRoot"
                } else {
                    "its own JSX factory"
                }
            ),
            None,
        )),
        Some("self-mounted") | None => None,
        Some("no-bundle") => nothing(
            "the bundle did not run to its end (see the page errors), so nothing could be mounted"
                .into(),
        ),
        Some("several") => nothing(format!(
            "`#root` is empty and the module exports several functions and no default ({}): pmpo does not guess which one to mount",
            str_list(mount.get("candidates"))
        )),
        Some("none") => nothing(format!(
            "`#root` is empty after the bundle ran and the module exports no component to mount (exports: {exports})"
        )),
        Some("returned-nothing") => nothing(format!(
            "the component `{component}` returned nothing to mount"
        )),
        Some(_) => nothing(format!(
            "mounting the component `{component}` threw (see the page errors)"
        )),
    }
}

/// What the page shows that explains a blank screenshot.
fn blank_causes(report: &PreviewReport, dom: Option<&Value>) -> Vec<String> {
    let mut causes = Vec::new();
    for f in &report.findings {
        if f.code == "missing-runtime" || f.code == "nothing-to-mount" {
            causes.push(f.message.clone());
        }
    }
    if let Some(e) = report.page_errors.first() {
        causes.push(format!(
            "{} uncaught page error(s), first: {}",
            report.page_errors.len(),
            e.message
        ));
    }
    let Some(d) = dom.filter(|d| d.get("body") == Some(&Value::Bool(true))) else {
        if dom.is_some() {
            causes.push("the page has no <body>".into());
        }
        return causes;
    };
    let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
    if d.get("root_empty") == Some(&Value::Bool(true)) {
        causes.push("`#root` is empty: nothing was rendered into it".into());
    }
    if n("elements") == 0 {
        causes.push("the page's <body> is empty".into());
    } else if d.get("all_hidden") == Some(&Value::Bool(true)) {
        causes.push("everything in <body> that has content is hidden (display: none, visibility: hidden, opacity: 0 or no size)".into());
    } else if n("body_text") == 0 && n("visible_media") == 0 {
        causes.push("the page's <body> holds no text and no image".into());
    }
    if let Some(text) = invisible_text(d) {
        causes.push(text);
    } else if n("body_text") > 0 && n("visible_text_elements") == 0 {
        causes.push("the page has text but none of it is visible".into());
    }
    causes
}

fn blank_finding(image: &ImageInfo, causes: &[String]) -> Finding {
    let colour = image.main_color.as_deref().unwrap_or("one colour");
    let share = image
        .main_color_percent
        .map(|p| format!("{p}% of the pixels"))
        .unwrap_or_else(|| "every pixel".into());
    let why = if causes.is_empty() {
        "no cause could be seen in the page (its content may be off-screen, drawn in the background colour by CSS, or appear after the screenshot)".to_string()
    } else {
        causes.join("; ")
    };
    Finding::new(
        "blank-screenshot",
        "error",
        format!("the screenshot is blank: one colour, {colour}, on {share} ({}x{}). Likely why: {why}", image.width, image.height),
        Some("fix the first likely cause and preview again; `click:` and `wait_ms:` show states that need interaction or time".into()),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn blank_report() -> PreviewReport {
        PreviewReport {
            image: Some(ImageInfo {
                width: 100,
                height: 50,
                blank: true,
                distinct_colors: 1,
                main_color: Some("#ffffff".into()),
                main_color_percent: Some(100.0),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_blank_render_says_why() {
        let mut r = blank_report();
        let dom = json!({"body": true, "body_text": 9, "visible_text_elements": 0, "visible_media": 0,
            "elements": 1, "all_hidden": false, "root_empty": null,
            "invisible_text": [{"selector": "#increment", "color": "rgb(255, 255, 255)", "background": "rgb(255, 255, 255)"}]});
        after_render(&mut r, Some(&dom));
        let f = &r.findings[0];
        assert_eq!(f.code, "blank-screenshot");
        assert!(
            f.message
                .contains("#ffffff, on 100% of the pixels (100x50)"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("`#increment` (rgb(255, 255, 255) on rgb(255, 255, 255))")
        );
        let mut r = blank_report();
        after_render(
            &mut r,
            Some(&json!({"body": true, "elements": 0, "root_empty": true})),
        );
        assert!(r.findings[0].message.contains("`#root` is empty"));
        assert!(r.findings[0].message.contains("<body> is empty"));
        let mut r = blank_report();
        after_render(&mut r, None);
        assert!(r.findings[0].message.contains("no cause could be seen"));
    }

    #[test]
    fn mounting_is_reported() {
        let f = mount_finding(&json!({"mounted": false, "why": "none", "exports": ["VERSION"]}))
            .unwrap();
        assert_eq!(f.code, "nothing-to-mount");
        assert!(f.message.contains("(exports: VERSION)"));
        let f =
            mount_finding(&json!({"mounted": true, "component": "Hello", "with": "dom"})).unwrap();
        assert_eq!(f.code, "mounted");
        assert!(mount_finding(&json!({"mounted": false, "why": "self-mounted"})).is_none());
    }
}
