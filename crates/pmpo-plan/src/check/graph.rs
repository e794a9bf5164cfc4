//! The dependency graph: cycles, what is upstream, the order stages run in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Finds one dependency cycle, as stage indexes in dependency order.
pub(super) fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; deps.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..deps.len() {
        if color[start] != Color::White {
            continue;
        }
        stack.push((start, 0));
        color[start] = Color::Grey;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match color[dep] {
                    Color::White => {
                        color[dep] = Color::Grey;
                        stack.push((dep, 0));
                    }
                    Color::Grey => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        // The stack runs dependent -> dependency; show it in execution order.
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        cycle.reverse();
                        return Some(cycle);
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
            }
        }
    }
    None
}

pub(super) fn is_upstream(deps: &[Vec<usize>], from: usize, target: usize) -> bool {
    if deps[from].contains(&target) {
        return true;
    }
    let mut seen = HashSet::new();
    let mut todo: Vec<usize> = deps[from].clone();
    while let Some(n) = todo.pop() {
        if n == target {
            return true;
        }
        if seen.insert(n) {
            todo.extend(deps[n].iter().copied());
        }
    }
    false
}

/// The order stages run in: the declared order, except that a stage never
/// runs before the stages it depends on. Requires an acyclic plan.
pub fn execution_order(stages: &[crate::Stage]) -> Vec<usize> {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut pending = vec![0usize; stages.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for (i, s) in stages.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                pending[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..stages.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    order
}
