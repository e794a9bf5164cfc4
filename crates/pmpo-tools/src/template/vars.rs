//! The variables a template needs: a walk of its syntax tree that tracks
//! which names it sets, loops over or guards, so the renderer and `pmpo
//! check` name the same missing variables.

use std::collections::BTreeSet;

use minijinja::Environment;

/// A variable a template reads that it does not set itself, at its first
/// unguarded read (1-based line and column in the template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarUse {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

/// The variables a template needs from `vars`: every name it reads that it
/// does not set itself (`set`, `for`, `with`, macro arguments) and that is
/// not a global function (`range`, `dict`, ...). A read guarded so that an
/// undefined value is fine does not count: `NAME is defined` / `is
/// undefined`, `NAME | default(...)` (or `d`), and reads inside `{% if NAME
/// is defined %}` (the `else` of `is undefined`), `... if NAME is defined
/// else ...`, `NAME is defined and ...`. Used by the renderer and by `pmpo
/// check`, so both name the same variables.
pub fn needed_variables(name: &str, source: &str) -> Result<Vec<VarUse>, minijinja::Error> {
    use minijinja::machinery::parse;
    let ast = parse(source, name, Default::default(), Default::default())?;
    let globals = Environment::new();
    let mut walk = VarWalk {
        scopes: vec![globals.globals().map(|(k, _)| k.to_string()).collect()],
        found: Vec::new(),
    };
    walk.stmt(&ast);
    Ok(walk.found)
}

/// Walks a template's syntax tree, tracking which names are defined where.
struct VarWalk {
    /// Names set or guarded, innermost scope last.
    scopes: Vec<BTreeSet<String>>,
    found: Vec<VarUse>,
}

/// Names a test proves defined when it is true, and when it is false.
type Guards<'a> = (Vec<&'a str>, Vec<&'a str>);

fn guards<'a>(e: &minijinja::machinery::ast::Expr<'a>) -> Guards<'a> {
    use minijinja::machinery::ast::{BinOpKind, Expr, UnaryOpKind};
    match e {
        Expr::Test(t) => match (&t.expr, t.name) {
            (Expr::Var(v), "defined") => (vec![v.id], vec![]),
            (Expr::Var(v), "undefined") => (vec![], vec![v.id]),
            _ => (vec![], vec![]),
        },
        Expr::UnaryOp(u) if matches!(u.op, UnaryOpKind::Not) => {
            let (yes, no) = guards(&u.expr);
            (no, yes)
        }
        Expr::BinOp(b) if matches!(b.op, BinOpKind::ScAnd) => {
            let (mut yes, _) = guards(&b.left);
            yes.extend(guards(&b.right).0);
            (yes, vec![])
        }
        Expr::BinOp(b) if matches!(b.op, BinOpKind::ScOr) => {
            let (_, mut no) = guards(&b.left);
            no.extend(guards(&b.right).1);
            (vec![], no)
        }
        _ => (vec![], vec![]),
    }
}

impl VarWalk {
    fn known(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.contains(name))
    }

    fn define(&mut self, name: &str) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string());
        }
    }

    /// Runs `f` in a new scope where `names` are defined.
    fn scoped(&mut self, names: &[&str], f: impl FnOnce(&mut Self)) {
        self.scopes
            .push(names.iter().map(|n| n.to_string()).collect());
        f(self);
        self.scopes.pop();
    }

    /// Defines the names an assignment target binds (`x`, `a, b`), and reads
    /// what a `namespace` attribute target reads.
    fn assign(&mut self, target: &minijinja::machinery::ast::Expr<'_>) {
        use minijinja::machinery::ast::Expr;
        match target {
            Expr::Var(v) => self.define(v.id),
            Expr::List(l) => l.items.iter().for_each(|i| self.assign(i)),
            other => self.expr(other),
        }
    }

    fn stmts(&mut self, body: &[minijinja::machinery::ast::Stmt<'_>]) {
        body.iter().for_each(|s| self.stmt(s));
    }

    fn stmt(&mut self, s: &minijinja::machinery::ast::Stmt<'_>) {
        use minijinja::machinery::ast::Stmt;
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => self.expr(&e.expr),
            Stmt::EmitRaw(_) => {}
            Stmt::ForLoop(f) => {
                self.expr(&f.iter);
                self.scoped(&["loop"], |w| {
                    w.assign(&f.target);
                    if let Some(filter) = &f.filter_expr {
                        w.expr(filter);
                    }
                    w.stmts(&f.body);
                });
                self.stmts(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr);
                let (yes, no) = guards(&c.expr);
                self.scoped(&yes, |w| w.stmts(&c.true_body));
                self.scoped(&no, |w| w.stmts(&c.false_body));
            }
            Stmt::WithBlock(w) => {
                for (_, value) in &w.assignments {
                    self.expr(value);
                }
                self.scoped(&[], |inner| {
                    for (target, _) in &w.assignments {
                        inner.assign(target);
                    }
                    inner.stmts(&w.body);
                });
            }
            Stmt::Set(set) => {
                self.expr(&set.expr);
                self.assign(&set.target);
            }
            Stmt::SetBlock(set) => {
                if let Some(filter) = &set.filter {
                    self.expr(filter);
                }
                self.stmts(&set.body);
                self.assign(&set.target);
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Import(i) => {
                self.expr(&i.expr);
                self.assign(&i.name);
            }
            Stmt::FromImport(i) => {
                self.expr(&i.expr);
                for (name, alias) in &i.names {
                    self.assign(alias.as_ref().unwrap_or(name));
                }
            }
            Stmt::Extends(e) => self.expr(&e.name),
            Stmt::Include(i) => self.expr(&i.name),
            Stmt::Macro(m) => {
                self.define(m.name);
                self.macro_body(m);
            }
            Stmt::CallBlock(c) => {
                self.call(&c.call);
                self.macro_body(&c.macro_decl);
            }
            Stmt::Do(d) => self.call(&d.call),
        }
    }

    fn macro_body(&mut self, m: &minijinja::machinery::ast::Macro<'_>) {
        m.defaults.iter().for_each(|d| self.expr(d));
        self.scoped(&["caller", "varargs", "kwargs"], |w| {
            m.args.iter().for_each(|a| w.assign(a));
            w.stmts(&m.body);
        });
    }

    fn call(&mut self, c: &minijinja::machinery::ast::Call<'_>) {
        self.expr(&c.expr);
        self.args(&c.args);
    }

    fn args(&mut self, args: &[minijinja::machinery::ast::CallArg<'_>]) {
        use minijinja::machinery::ast::CallArg;
        for a in args {
            match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => self.expr(e),
            }
        }
    }

    fn expr(&mut self, e: &minijinja::machinery::ast::Expr<'_>) {
        use minijinja::machinery::ast::{BinOpKind, Expr};
        match e {
            Expr::Var(v) => {
                if !self.known(v.id) && !self.found.iter().any(|u| u.name == v.id) {
                    let span = v.span();
                    self.found.push(VarUse {
                        name: v.id.to_string(),
                        line: usize::from(span.start_line),
                        column: usize::from(span.start_col) + 1,
                    });
                }
            }
            Expr::Const(_) => {}
            Expr::Slice(s) => {
                self.expr(&s.expr);
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part);
                }
            }
            Expr::UnaryOp(u) => self.expr(&u.expr),
            Expr::BinOp(b) => {
                self.expr(&b.left);
                let (yes, no) = guards(&b.left);
                match b.op {
                    BinOpKind::ScAnd => self.scoped(&yes, |w| w.expr(&b.right)),
                    BinOpKind::ScOr => self.scoped(&no, |w| w.expr(&b.right)),
                    _ => self.expr(&b.right),
                }
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                c.ops.iter().for_each(|op| self.expr(&op.expr));
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                let (yes, no) = guards(&i.test_expr);
                self.scoped(&yes, |w| w.expr(&i.true_expr));
                if let Some(f) = &i.false_expr {
                    self.scoped(&no, |w| w.expr(f));
                }
            }
            Expr::Filter(f) => {
                // `NAME | default(...)` is how a template says NAME is optional.
                match (&f.expr, f.name) {
                    (Some(Expr::Var(_)), "default" | "d") => {}
                    (Some(inner), _) => self.expr(inner),
                    (None, _) => {}
                }
                self.args(&f.args);
            }
            Expr::Test(t) => {
                match (&t.expr, t.name) {
                    (Expr::Var(_), "defined" | "undefined") => {}
                    (inner, _) => self.expr(inner),
                }
                self.args(&t.args);
            }
            Expr::GetAttr(g) => self.expr(&g.expr),
            Expr::GetItem(g) => {
                self.expr(&g.expr);
                self.expr(&g.subscript_expr);
            }
            Expr::Call(c) => self.call(c),
            Expr::List(l) => l.items.iter().for_each(|i| self.expr(i)),
            Expr::Map(m) => {
                m.keys.iter().for_each(|k| self.expr(k));
                m.values.iter().for_each(|v| self.expr(v));
            }
        }
    }
}
