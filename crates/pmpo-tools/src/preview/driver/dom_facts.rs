//! Cheap facts about the settled page, read with one `Runtime.evaluate`
//! before the screenshot: what a person would see (text, images, hidden
//! elements, text drawn in its background's colour) and what the host page
//! of a `.tsx` entry mounted. The preview's findings say from them why a
//! render is blank (see `preview/findings.rs`).

use std::time::Duration;

use serde_json::{Value, json};

use super::{PageState, RenderRequest};

/// The longest wait for the answer (the page has just painted).
const LIMIT: Duration = Duration::from_secs(2);

const SCRIPT: &str = r##"(() => {
  const body = document.body;
  if (!body) return {body: false};
  const skip = new Set(["SCRIPT", "STYLE", "TEMPLATE", "NOSCRIPT", "HEAD", "META", "LINK", "TITLE"]);
  const shown = el => {
    const s = getComputedStyle(el), r = el.getBoundingClientRect();
    return s.display !== "none" && s.visibility !== "hidden" && Number(s.opacity) > 0 && r.width > 0 && r.height > 0;
  };
  const clear = c => c === "transparent" || /rgba\(.*,\s*0\)$/.test(c);
  // The colour behind an element's text; null when an image or gradient may be behind it.
  // Remembered per element: siblings share their ancestors' answer.
  const behind = new Map();
  const background = el => {
    if (!el) return "rgb(255, 255, 255)";
    if (behind.has(el)) return behind.get(el);
    const st = getComputedStyle(el);
    const c = st.backgroundImage !== "none" ? null
      : !clear(st.backgroundColor) ? st.backgroundColor : background(el.parentElement);
    behind.set(el, c);
    return c;
  };
  // Something else drawn under the element's middle (an image, a gradient,
  // another colour) that is not one of its ancestors: the text may show on it.
  const overPicture = (el, bg) => {
    const r = el.getBoundingClientRect();
    for (const e of document.elementsFromPoint(r.left + r.width / 2, r.top + r.height / 2)) {
      if (e === el || e.contains(el)) continue;
      const st = getComputedStyle(e);
      if (/^(IMG|VIDEO|CANVAS|SVG|PICTURE|IFRAME)$/i.test(e.tagName) || st.backgroundImage !== "none"
          || (!clear(st.backgroundColor) && st.backgroundColor !== bg)) return true;
    }
    return false;
  };
  const name = el => el.id ? "#" + el.id : el.tagName.toLowerCase() + (el.classList.length ? "." + [...el.classList].slice(0, 2).join(".") : "");
  let text = 0, media = 0, seen = 0;
  const invisible = [];
  for (const el of body.querySelectorAll("*")) {
    if (skip.has(el.tagName) || ++seen > 5000) continue;
    if (!shown(el)) continue;
    if (/^(img|svg|canvas|video|picture|iframe|input|select|textarea)$/i.test(el.tagName)) media++;
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    text++;
    const s = getComputedStyle(el), bg = background(el);
    if (bg && (clear(s.color) || s.color === bg) && !overPicture(el, bg)) {
      text--;
      if (invisible.length < 5) invisible.push({selector: name(el), color: s.color, background: bg});
    }
  }
  const kids = [...body.children].filter(k => !skip.has(k.tagName));
  // Elements with something to show: hidden, they explain a blank page; empty, they do not.
  const full = kids.filter(k => k.textContent.trim() || k.querySelector("img,svg,canvas,video,picture,iframe,input"));
  const root = document.getElementById("root");
  return {
    body: true,
    body_text: body.innerText.trim().length,
    visible_text_elements: text,
    visible_media: media,
    elements: kids.length,
    all_hidden: full.length > 0 && full.every(k => !shown(k)),
    invisible_text: invisible,
    root_empty: root ? root.childNodes.length === 0 : null,
    mount: window.__pmpoMount || null,
    alpine: window.__pmpoAlpine || null
  };
})()"##;

/// The facts, or `None` when the page could not answer in time.
pub(super) async fn collect(state: &mut PageState<'_>, req: &RenderRequest<'_>) -> Option<Value> {
    let (conn, session) = (state.conn, state.session.clone());
    let call = conn.call(
        Some(session.as_str()),
        "Runtime.evaluate",
        json!({"expression": SCRIPT, "returnByValue": true}),
    );
    let answer = state
        .pump(tokio::time::timeout(LIMIT, call), req.deadline, req.cancel)
        .await
        .ok()?
        .ok()?
        .ok()?;
    answer.pointer("/result/value").cloned()
}
