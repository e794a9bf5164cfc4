//! The condition language of workflow triggers.
//!
//! A condition is a small boolean expression evaluated over a JSON object
//! (the hook-event payload). It is pure: it cannot run code, read files or
//! reach the network, and evaluation never panics.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := cmp ( "&&" cmp )*
//! cmp     := unary ( ("==" | "!=" | "<" | "<=" | ">" | ">=") unary )?
//! unary   := "!" unary | postfix
//! postfix := primary ( "." method "(" argument ")" )*
//! primary := "(" expr ")" | string | word
//! method  := startsWith | endsWith | contains
//! ```
//!
//! A word is made of letters, digits and `_ - : . /`. A word that looks like
//! a number is a number; `true`, `false` and `null` are literals; a word
//! whose first dotted segment is a top-level key of the variables is a
//! variable path (a missing deeper field is `null`); any other word is a
//! string literal, so `phase == execute && content_type.startsWith(meta:)`
//! needs no quotes. Inside a method call's parentheses, unquoted text up to
//! the closing parenthesis (spaces included) is taken the same way.

use serde_json::Value;

/// The longest condition accepted, in characters.
pub const MAX_LEN: usize = 4096;
/// The deepest nesting of parentheses, `!` and method calls accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a condition could not be parsed, and where (1-based character column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{shown}` column {column}: {message}")]
pub struct ConditionError {
    /// The condition text (shortened when very long).
    pub shown: String,
    /// The 1-based character column of the problem.
    pub column: usize,
    /// What is wrong and what is expected instead.
    pub message: String,
}

/// A parsed condition, ready to be evaluated any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    expr: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    StartsWith,
    EndsWith,
    Contains,
}

const METHODS: &[(&str, Method)] = &[
    ("startsWith", Method::StartsWith),
    ("endsWith", Method::EndsWith),
    ("contains", Method::Contains),
];

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Value),
    /// A variable path if its first segment is a key of the variables,
    /// otherwise the string itself.
    Word(String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Call(Method, Box<Expr>, Box<Expr>),
}

/// Parses a condition, checking its length and nesting depth.
pub fn parse(src: &str) -> Result<Condition, ConditionError> {
    let chars: Vec<char> = src.chars().collect();
    let mut parser = Parser {
        src,
        chars,
        pos: 0,
        depth: 0,
    };
    if parser.chars.len() > MAX_LEN {
        return Err(parser.error_at(
            MAX_LEN,
            format!(
                "the condition is {} characters long; at most {MAX_LEN} are allowed",
                parser.chars.len()
            ),
        ));
    }
    parser.skip_ws();
    if parser.at_end() {
        return Err(parser.error("expected a value (the condition is empty)"));
    }
    let expr = parser.parse_or()?;
    parser.skip_ws();
    if let Some(c) = parser.peek() {
        return Err(parser.error(format!(
            "unexpected `{c}`; expected `&&`, `||`, a comparison or the end of the condition"
        )));
    }
    Ok(Condition { expr })
}

impl Condition {
    /// Evaluates the condition over `vars` (normally a JSON object). Only a
    /// boolean `true` result counts as true; type mismatches yield false.
    pub fn eval(&self, vars: &Value) -> bool {
        truthy(&eval(&self.expr, vars))
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '/')
}

impl Parser<'_> {
    fn error_at(&self, pos: usize, message: impl Into<String>) -> ConditionError {
        const SHOWN: usize = 80;
        let shown = if self.chars.len() > SHOWN {
            let mut s: String = self.chars[..SHOWN].iter().collect();
            s.push_str("...");
            s
        } else {
            self.src.to_string()
        };
        ConditionError {
            shown,
            column: pos + 1,
            message: message.into(),
        }
    }

    fn error(&self, message: impl Into<String>) -> ConditionError {
        self.error_at(self.pos, message)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `token` (after whitespace) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        let len = token.chars().count();
        let matches = token
            .chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c));
        if matches {
            self.pos += len;
        }
        matches
    }

    fn enter(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!(
                "the condition nests deeper than {MAX_DEPTH} levels; simplify it"
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn parse_or(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.parse_and()?];
        while self.eat("||") {
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.parse_cmp()?];
        while self.eat("&&") {
            items.push(self.parse_cmp()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn cmp_op(&mut self) -> Result<Option<CmpOp>, ConditionError> {
        self.skip_ws();
        let two = (self.peek(), self.peek_at(1));
        let (op, len) = match two {
            (Some('='), Some('=')) => (CmpOp::Eq, 2),
            (Some('!'), Some('=')) => (CmpOp::Ne, 2),
            (Some('<'), Some('=')) => (CmpOp::Le, 2),
            (Some('>'), Some('=')) => (CmpOp::Ge, 2),
            (Some('<'), _) => (CmpOp::Lt, 1),
            (Some('>'), _) => (CmpOp::Gt, 1),
            (Some('='), _) => return Err(self.error("a single `=` is not an operator; use `==`")),
            (Some('&'), c) if c != Some('&') => {
                return Err(self.error("a single `&` is not an operator; use `&&`"));
            }
            (Some('|'), c) if c != Some('|') => {
                return Err(self.error("a single `|` is not an operator; use `||`"));
            }
            _ => return Ok(None),
        };
        self.pos += len;
        Ok(Some(op))
    }

    fn parse_cmp(&mut self) -> Result<Expr, ConditionError> {
        let left = self.parse_unary()?;
        let Some(op) = self.cmp_op()? else {
            return Ok(left);
        };
        let right = self.parse_unary()?;
        self.skip_ws();
        let at = self.pos;
        if self.cmp_op()?.is_some() {
            return Err(self.error_at(
                at,
                "comparisons cannot be chained; combine them with `&&` or parentheses",
            ));
        }
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn parse_unary(&mut self) -> Result<Expr, ConditionError> {
        self.skip_ws();
        if self.peek() == Some('!') && self.peek_at(1) != Some('=') {
            self.enter()?;
            self.pos += 1;
            let inner = self.parse_unary()?;
            self.leave();
            return Ok(Expr::Not(Box::new(inner)));
        }
        let mut expr = self.parse_primary()?;
        // Method calls on a quoted string or a parenthesised value:
        // `'abc'.startsWith(a)`, `(x).contains(y)`.
        while self.peek() == Some('.') {
            let start = self.pos;
            self.pos += 1;
            let name = self.scan_word();
            let method = self.method(&name, start + 1)?;
            self.skip_ws();
            if self.peek() != Some('(') {
                return Err(self.error(format!("expected `(` after `.{name}`")));
            }
            expr = self.parse_call(method, expr)?;
        }
        Ok(expr)
    }

    fn method(&self, name: &str, at: usize) -> Result<Method, ConditionError> {
        METHODS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                self.error_at(
                    at,
                    format!(
                        "unknown method `{name}`; the known methods are startsWith, endsWith and contains"
                    ),
                )
            })
    }

    fn scan_word(&mut self) -> String {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn parse_primary(&mut self) -> Result<Expr, ConditionError> {
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Err(self.error("expected a value"));
        };
        match c {
            '(' => {
                let open = self.pos;
                self.enter()?;
                self.pos += 1;
                let inner = self.parse_or()?;
                self.leave();
                if !self.eat(")") {
                    self.skip_ws();
                    return Err(match self.peek() {
                        None => self.error(format!(
                            "expected `)` to close the `(` at column {}",
                            open + 1
                        )),
                        Some(c) => self.error(format!(
                            "unexpected `{c}`; expected `)` to close the `(` at column {}",
                            open + 1
                        )),
                    });
                }
                Ok(inner)
            }
            '"' | '\'' => Ok(Expr::Lit(Value::String(self.parse_string()?))),
            c if is_word_char(c) => {
                let start = self.pos;
                let word = self.scan_word();
                let after_word = self.pos;
                self.skip_ws();
                if self.peek() == Some('(') {
                    // `receiver.method(` was scanned as one word: split it.
                    let Some(dot) = word.rfind('.') else {
                        return Err(self.error_at(
                            start,
                            format!(
                                "`{word}` is not a method call; write `value.startsWith(x)`, `value.endsWith(x)` or `value.contains(x)`"
                            ),
                        ));
                    };
                    let name = &word[dot + 1..];
                    let receiver = &word[..dot];
                    let name_col = start + receiver.chars().count() + 1;
                    let method = self.method(name, name_col)?;
                    if receiver.is_empty() {
                        return Err(self.error_at(start, "expected a value before the method"));
                    }
                    return self.parse_call(method, word_expr(receiver));
                }
                self.pos = after_word;
                Ok(word_expr(&word))
            }
            ')' => Err(self.error("unexpected `)`; expected a value")),
            other => Err(self.error(format!("unexpected `{other}`; expected a value"))),
        }
    }

    /// Parses `(argument)` after a method name; the position is at `(`.
    fn parse_call(&mut self, method: Method, receiver: Expr) -> Result<Expr, ConditionError> {
        let open = self.pos;
        self.enter()?;
        self.pos += 1;
        self.skip_ws();
        let arg = match self.peek() {
            None => return Err(self.error("expected the method's argument and `)`")),
            Some(')') => {
                return Err(self.error("expected the method's argument before `)`"));
            }
            Some(c) if is_word_char(c) => {
                // Bare text up to `)`, spaces included.
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| is_word_char(c) || c == ' ' || c == '\t')
                {
                    self.pos += 1;
                }
                let raw: String = self.chars[start..self.pos].iter().collect();
                let raw = raw.trim();
                if raw.contains([' ', '\t']) {
                    Expr::Lit(Value::String(raw.to_string()))
                } else {
                    word_expr(raw)
                }
            }
            Some(_) => self.parse_unary()?,
        };
        self.leave();
        if !self.eat(")") {
            self.skip_ws();
            return Err(match self.peek() {
                None => self.error(format!(
                    "expected `)` to close the method call opened at column {}",
                    open + 1
                )),
                Some(c) => self.error(format!(
                    "unexpected `{c}` in a method argument; quote the argument and close it with `)`"
                )),
            });
        }
        Ok(Expr::Call(method, Box::new(receiver), Box::new(arg)))
    }

    fn parse_string(&mut self) -> Result<String, ConditionError> {
        let open = self.pos;
        let Some(quote) = self.peek() else {
            return Err(self.error("expected a string"));
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error_at(open, "this string is never closed"));
            };
            self.pos += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.error_at(open, "this string is never closed"));
                    };
                    self.pos += 1;
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// A bare word: a number, `true`/`false`/`null`, or a variable-or-string.
fn word_expr(word: &str) -> Expr {
    match word {
        "true" => return Expr::Lit(Value::Bool(true)),
        "false" => return Expr::Lit(Value::Bool(false)),
        "null" => return Expr::Lit(Value::Null),
        _ => {}
    }
    if let Some(n) = number_literal(word) {
        return Expr::Lit(Value::Number(n));
    }
    Expr::Word(word.to_string())
}

/// `-?digits(.digits)?` as a JSON number; anything else is not a number.
fn number_literal(word: &str) -> Option<serde_json::Number> {
    let digits = word.strip_prefix('-').unwrap_or(word);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    if frac.is_none()
        && let Ok(i) = word.parse::<i64>()
    {
        return Some(i.into());
    }
    word.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
}

fn lookup(word: &str, vars: &Value) -> Value {
    let mut segments = word.split('.');
    let first = segments.next().unwrap_or_default();
    let Some(mut current) = vars.as_object().and_then(|o| o.get(first)) else {
        return Value::String(word.to_string());
    };
    for seg in segments {
        let next = match current {
            Value::Object(o) => o.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Value::Null,
        }
    }
    current.clone()
}

fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn eval(expr: &Expr, vars: &Value) -> Value {
    match expr {
        Expr::Lit(v) => v.clone(),
        Expr::Word(w) => lookup(w, vars),
        Expr::Not(e) => Value::Bool(!truthy(&eval(e, vars))),
        Expr::And(items) => Value::Bool(items.iter().all(|e| truthy(&eval(e, vars)))),
        Expr::Or(items) => Value::Bool(items.iter().any(|e| truthy(&eval(e, vars)))),
        Expr::Cmp(op, l, r) => Value::Bool(compare(*op, &eval(l, vars), &eval(r, vars))),
        Expr::Call(m, recv, arg) => Value::Bool(call(*m, &eval(recv, vars), &eval(arg, vars))),
    }
}

/// A number, or a string that reads as one.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn compare(op: CmpOp, l: &Value, r: &Value) -> bool {
    use std::cmp::Ordering;
    let numeric = match (l, r) {
        (Value::Number(_), Value::Number(_))
        | (Value::Number(_), Value::String(_))
        | (Value::String(_), Value::Number(_)) => match (as_number(l), as_number(r)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        _ => None,
    };
    let ordering: Option<Ordering> = match (numeric, l, r) {
        (Some(o), _, _) => Some(o),
        (None, Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match op {
        CmpOp::Eq => ordering.map_or_else(|| l == r, Ordering::is_eq),
        CmpOp::Ne => ordering.map_or_else(|| l != r, Ordering::is_ne),
        CmpOp::Lt => ordering.is_some_and(Ordering::is_lt),
        CmpOp::Le => ordering.is_some_and(Ordering::is_le),
        CmpOp::Gt => ordering.is_some_and(Ordering::is_gt),
        CmpOp::Ge => ordering.is_some_and(Ordering::is_ge),
    }
}

fn call(method: Method, recv: &Value, arg: &Value) -> bool {
    match (method, recv, arg) {
        (Method::StartsWith, Value::String(s), Value::String(a)) => s.starts_with(a.as_str()),
        (Method::EndsWith, Value::String(s), Value::String(a)) => s.ends_with(a.as_str()),
        (Method::Contains, Value::String(s), Value::String(a)) => s.contains(a.as_str()),
        (Method::Contains, Value::Array(items), a) => {
            items.iter().any(|item| compare(CmpOp::Eq, item, a))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(src: &str, vars: &Value) -> bool {
        match parse(src) {
            Ok(c) => c.eval(vars),
            Err(e) => panic!("{e}"),
        }
    }

    fn err(src: &str) -> ConditionError {
        match parse(src) {
            Ok(c) => panic!("`{src}` parsed as {c:?}"),
            Err(e) => e,
        }
    }

    fn payload() -> Value {
        json!({
            "phase": "execute",
            "content_type": "meta:prompt",
            "iteration": 3,
            "score": "0.75",
            "title": "hello world",
            "metadata": {"regressions": 2, "tags": ["a", "b"], "ok": true}
        })
    }

    const EXAMPLE: &str = "phase == execute && content_type.startsWith(meta:)";

    #[test]
    fn reference_example_true_and_false() {
        assert!(check(EXAMPLE, &payload()));
        let mut other = payload();
        other["content_type"] = json!("text/markdown");
        assert!(!check(EXAMPLE, &other));
        other = payload();
        other["phase"] = json!("plan");
        assert!(!check(EXAMPLE, &other));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let v = payload();
        // true || (false && false) is true; (true || false) && false is false.
        assert!(check(
            "phase == execute || iteration == 9 && phase == plan",
            &v
        ));
        assert!(!check(
            "(phase == execute || iteration == 9) && phase == plan",
            &v
        ));
        assert!(check("!(phase == plan) && !false", &v));
        assert!(!check("!true || false", &v));
    }

    #[test]
    fn numbers_compare_numerically() {
        let v = payload();
        assert!(check(
            "iteration > 2 && iteration <= 3 && iteration != 4",
            &v
        ));
        assert!(check("iteration == 3.0", &v));
        assert!(check("iteration >= -1", &v));
        assert!(check("metadata.regressions > 1.5", &v));
        assert!(check("score == 0.75 && score < 1", &v), "numeric string");
        assert!(!check("iteration > 10", &v));
        assert!(check("10 > 9", &v), "numerically, not lexically");
        assert!(check("'b' > 'a' && 'abc' < 'abd'", &v), "strings lexically");
        assert!(!check("phase > 3", &v), "string vs number is false");
    }

    #[test]
    fn quoted_strings_keep_spaces_and_escapes() {
        let v = payload();
        assert!(check("title == \"hello world\"", &v));
        assert!(check("title == 'hello world'", &v));
        assert!(check("title.contains('o w')", &v));
        assert!(
            check("title.endsWith(o world)", &v),
            "bare text with a space"
        );
        assert!(check(r#"'it\'s' == "it's""#, &v));
        assert!(check("'x.y'.startsWith(x)", &v));
    }

    #[test]
    fn missing_variables_and_unknown_words() {
        let v = payload();
        assert!(check("metadata.missing == null", &v));
        assert!(check("metadata.missing.deeper == null", &v));
        assert!(!check("metadata.missing > 0", &v));
        assert!(!check("metadata.missing.startsWith(a)", &v));
        // A word that is not a top-level key is a string literal.
        assert!(check("unknown_thing == 'unknown_thing'", &v));
        assert!(check("metadata.tags.contains(b) && metadata.ok", &v));
        assert!(check("metadata.tags.1 == b", &v));
        // Evaluating over something that is not an object never panics.
        assert!(!check("phase == execute", &json!(null)));
        assert!(check("phase == phase", &json!([1, 2])));
    }

    #[test]
    fn non_boolean_results_are_false() {
        let v = payload();
        assert!(!check("phase", &v));
        assert!(!check("iteration", &v));
        assert!(check("!phase", &v));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = err("phase == ");
        assert_eq!(e.column, 10);
        assert_eq!(
            e.to_string(),
            "condition `phase == ` column 10: expected a value"
        );

        let e = err("phase == execute && content_type.beginsWith(x)");
        assert_eq!(e.column, 34);
        assert!(e.message.contains("unknown method `beginsWith`"), "{e}");

        let e = err("phase == execute extra");
        assert_eq!(e.column, 18);
        assert!(e.message.contains("unexpected `e`"), "{e}");

        let e = err("phase == execute )");
        assert_eq!(e.column, 18);

        let e = err("(phase == execute && (iteration > 1)");
        assert_eq!(e.column, 37);
        assert!(
            e.message
                .contains("expected `)` to close the `(` at column 1"),
            "{e}"
        );

        let e = err("title == 'abc");
        assert_eq!(e.column, 10);
        assert!(e.message.contains("never closed"), "{e}");

        assert!(err("a = b").message.contains("use `==`"));
        assert!(err("a & b").message.contains("use `&&`"));
        assert!(err("a == b == c").message.contains("cannot be chained"));
        assert!(err("").message.contains("empty"));
        assert!(err("x.contains(").message.contains("argument"));
        assert!(err("x.contains()").message.contains("argument"));
        assert!(
            err("x.contains(a b && c)")
                .message
                .contains("method argument")
        );
        assert!(err("foo(x)").message.contains("not a method call"));
        assert!(err("a == #").message.contains("unexpected `#`"));
    }

    #[test]
    fn every_prefix_of_tricky_input_parses_or_errors_without_panicking() {
        let inputs = [
            EXAMPLE,
            "!(a.b.contains('x y') || (é == \"ü\\\"\")) && n >= -1.5 != true",
            "'a'.endsWith(b).contains(c) || x.startsWith((y)) && z.contains(-)",
        ];
        let v = payload();
        for input in inputs {
            let chars: Vec<char> = input.chars().collect();
            for end in 0..=chars.len() {
                let prefix: String = chars[..end].iter().collect();
                match parse(&prefix) {
                    Ok(c) => {
                        c.eval(&v);
                    }
                    Err(e) => assert!(e.column >= 1 && e.column <= end + 1, "{e}"),
                }
            }
        }
    }

    #[test]
    fn nesting_depth_and_length_are_limited() {
        let ok = format!("{}true{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(check(&ok, &json!({})));
        let deep = format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = err(&deep);
        assert_eq!(e.column, MAX_DEPTH + 1);
        assert!(e.message.contains("nests deeper"), "{e}");
        assert!(e.shown.ends_with("..."), "long text is shortened");
        assert!(err(&"!".repeat(200)).message.contains("nests deeper"));

        let long = format!("a == '{}'", "x".repeat(MAX_LEN));
        let e = err(&long);
        assert!(e.message.contains("at most 4096"), "{e}");

        // A long flat chain is fine (it does not nest).
        let chain = vec!["true"; 500].join(" && ");
        assert!(check(&chain, &json!({})));
    }
}
