//! Check speed against its targets, printed as figures (no assertion on time):
//!
//! - `image_dimensions` over 1,000 PNG files (headers and chunk structure, no pixel decoding): target < 500 ms
//! - `json_schema` on a 10 MB JSON file: target < 1 s
//!
//! Run: `cargo bench -p pmpo-checks --bench checks`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut all = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f();
        all.push(t.elapsed());
    }
    let min = *all.iter().min().unwrap_or(&Duration::ZERO);
    (median(all), min)
}

fn main() {
    let w = common::Ws::new();

    // 1,000 PNGs: 250 each of 16, 32, 64 and 128 px.
    let sizes = [16u32, 32, 64, 128];
    for i in 0..1000 {
        let s = sizes[i % 4];
        w.write(&format!("png/{s}/icon-{i:04}.png"), common::png(s, s));
    }
    let total_bytes: u64 = walk_size(&w.p("png"));
    let (med, min) = time(7, || {
        for s in sizes {
            let o = w.check(
                "image_dimensions",
                json!({"path": format!("png/{s}/*.png"), "width": s, "height": s}),
            );
            assert!(o.passed(), "{}", o.message);
            assert_eq!(o.evidence["checked"], 250);
        }
    });
    println!(
        "image_dimensions, 1000 PNG files ({:.1} MB): median {:.1} ms, best {:.1} ms (target < 500 ms)",
        total_bytes as f64 / 1e6,
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3
    );

    // A 10 MB JSON document against a schema.
    let mut items = Vec::new();
    let mut size = 0usize;
    let mut i = 0u64;
    while size < 10_000_000 {
        let item = json!({
            "id": i, "name": format!("item-{i}"), "price": (i % 1000) as f64 / 10.0,
            "tags": ["a", "b", "c"], "active": i & 1 == 0,
            "dimensions": {"width": i % 512, "height": (i * 7) % 512}
        });
        size += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    let doc = json!({"generated": "bench", "items": items});
    let text = serde_json::to_string(&doc).unwrap_or_default();
    w.write("big.json", &text);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "name", "price", "tags", "active", "dimensions"],
            "properties": {
                "id": {"type": "integer", "minimum": 0},
                "name": {"type": "string", "pattern": "^item-[0-9]+$"},
                "price": {"type": "number", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                "active": {"type": "boolean"},
                "dimensions": {"type": "object", "properties": {
                    "width": {"type": "integer"}, "height": {"type": "integer"}}}
            }
        }}}
    });
    let (med, min) = time(5, || {
        let o = w.check("json_schema", json!({"path": "big.json", "schema": schema}));
        assert!(o.passed(), "{}", o.message);
    });
    println!(
        "json_schema, {:.1} MB JSON ({} objects): median {:.0} ms, best {:.0} ms (target < 1 s)",
        text.len() as f64 / 1e6,
        i,
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3
    );
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_size(&p);
        } else {
            n += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    n
}
