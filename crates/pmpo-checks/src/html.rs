//! HTML structure: the HTML5 parsing algorithm (html5ever) run over a sink
//! that keeps no tree, only element names (the tree builder asks for them)
//! and every parse error with the line it was found on.

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};

use html5ever::interface::{ElementFlags, NodeOrText, QuirksMode, TreeSink};
use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::tokenizer::TokenizerOpts;
use html5ever::tree_builder::TreeBuilderOpts;
use html5ever::{Attribute, ParseOpts, QualName, local_name, ns};

/// Errors listed (all are counted).
const MAX_LISTED: usize = 50;

/// What parsing found.
pub(crate) struct HtmlReport {
    /// (line, message) of the first errors.
    pub errors: Vec<(u64, String)>,
    pub error_count: usize,
    pub quirks_mode: bool,
}

struct Sink {
    /// Element names by handle; handle 0 is the document.
    names: RefCell<Vec<QualName>>,
    errors: RefCell<Vec<(u64, String)>>,
    count: Cell<usize>,
    line: Cell<u64>,
    quirks: Cell<bool>,
}

impl Sink {
    fn node(&self, name: QualName) -> usize {
        let mut names = self.names.borrow_mut();
        names.push(name);
        names.len() - 1
    }
}

impl TreeSink for Sink {
    type Handle = usize;
    type Output = HtmlReport;
    type ElemName<'a> = Ref<'a, QualName>;

    fn finish(self) -> HtmlReport {
        HtmlReport {
            errors: self.errors.into_inner(),
            error_count: self.count.get(),
            quirks_mode: self.quirks.get(),
        }
    }

    fn parse_error(&self, msg: Cow<'static, str>) {
        self.count.set(self.count.get() + 1);
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_LISTED {
            errors.push((self.line.get(), tidy(&msg)));
        }
    }

    fn set_current_line(&self, line: u64) {
        self.line.set(line);
    }

    fn get_document(&self) -> usize {
        0
    }

    fn elem_name<'a>(&'a self, target: &'a usize) -> Ref<'a, QualName> {
        Ref::map(self.names.borrow(), |n| &n[(*target).min(n.len() - 1)])
    }

    fn create_element(&self, name: QualName, _: Vec<Attribute>, _: ElementFlags) -> usize {
        self.node(name)
    }

    fn create_comment(&self, _: StrTendril) -> usize {
        self.node(QualName::new(None, ns!(), local_name!("")))
    }

    fn create_pi(&self, _: StrTendril, _: StrTendril) -> usize {
        self.node(QualName::new(None, ns!(), local_name!("")))
    }

    fn append(&self, _: &usize, _: NodeOrText<usize>) {}

    fn append_based_on_parent_node(&self, _: &usize, _: &usize, _: NodeOrText<usize>) {}

    fn append_doctype_to_document(&self, _: StrTendril, _: StrTendril, _: StrTendril) {}

    fn get_template_contents(&self, target: &usize) -> usize {
        *target
    }

    fn same_node(&self, x: &usize, y: &usize) -> bool {
        x == y
    }

    fn set_quirks_mode(&self, mode: QuirksMode) {
        self.quirks.set(mode == QuirksMode::Quirks);
    }

    fn append_before_sibling(&self, _: &usize, _: NodeOrText<usize>) {}

    fn add_attrs_if_missing(&self, _: &usize, _: Vec<Attribute>) {}

    fn remove_from_parent(&self, _: &usize) {}

    fn reparent_children(&self, _: &usize, _: &usize) {}
}

/// Parses a document and reports its parse errors (with exact messages and lines).
pub(crate) fn parse(text: &str) -> HtmlReport {
    let sink = Sink {
        names: RefCell::new(vec![QualName::new(None, ns!(html), local_name!("html"))]),
        errors: RefCell::new(Vec::new()),
        count: Cell::new(0),
        line: Cell::new(1),
        quirks: Cell::new(false),
    };
    let opts = ParseOpts {
        tokenizer: TokenizerOpts {
            exact_errors: true,
            ..Default::default()
        },
        tree_builder: TreeBuilderOpts {
            exact_errors: true,
            ..Default::default()
        },
    };
    html5ever::parse_document(sink, opts).one(text)
}

/// html5ever's exact messages print element names as `Atom('div' type=inline)`;
/// show them as `<div>`.
fn tidy(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("Atom('") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 6..];
        match (after.find('\''), after.find(')')) {
            (Some(q), Some(close)) if q < close => {
                out.push('<');
                out.push_str(&after[..q]);
                out.push('>');
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str("Atom('");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_tidied() {
        assert_eq!(
            super::tidy("Unexpected open element while closing Atom('div' type=inline)"),
            "Unexpected open element while closing <div>"
        );
        assert_eq!(super::tidy("no atoms"), "no atoms");
        assert_eq!(super::tidy("Atom('x"), "Atom('x");
    }

    #[test]
    fn errors_have_lines() {
        let r =
            super::parse("<!DOCTYPE html>\n<html><body>\n<div><span>x</div>\n</p></body></html>\n");
        assert_eq!(r.error_count, 2);
        assert_eq!(r.errors[0].0, 3);
        assert_eq!(r.errors[1], (4, "No <p> tag to close".to_string()));
        let ok = super::parse("<!DOCTYPE html><title>t</title><p>x");
        assert_eq!(ok.error_count, 0, "{:?}", ok.errors);
    }
}
