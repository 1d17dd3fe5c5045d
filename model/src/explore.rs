//! The exhaustive explorer: breadth-first over hashed states, then a strongly-connected-component
//! pass for busy loops.
//!
//! # Why not stateright
//!
//! stateright 0.31 was considered first. Its `always` properties would do for the two safety
//! properties and its deadlock-style terminal checks for `p_no_lost_wakeup`, but its `eventually`
//! properties are documented to work only on acyclic paths, so they cannot find `p_no_busy_loop` (a
//! cycle that consumes nothing); the oracle and the trace generator need the step function directly
//! anyway; and it would bring a dependency tree (its explorer web UI among it) into the workspace for
//! about 150 lines of BFS and Tarjan here.
//!
//! # What is checked
//!
//! - On every reachable state: `p_deleted_bh_never_called` and `p_bh_never_on_list_twice`
//!   ([`State::safety_violation`]).
//! - On every state with no successor: `p_no_lost_wakeup` — a poller is blocked in a wait that no
//!   remaining step can end while work is pending ([`State::lost_wakeup`]).
//! - `p_no_busy_loop`: a cycle of the state graph that starts a loop iteration
//!   (`ctx_poll_compute_timeout` or `ctx_prepare_notify_me_or`), calls no BH, and is fair. Remote
//!   threads never go back, so a cycle never contains a remote step: it is fair only if every remote
//!   has finished (otherwise it merely starves an enabled remote). Found as a strongly connected
//!   component of the non-progress edges (every edge but `bh_poll_call`) containing such an edge.
//!   Userspace polling rounds are bounded per iteration, and a round does not start an iteration, so
//!   polling is never mistaken for a busy loop. Fairness among pollers is not enforced: in the correct
//!   model the state graph of every named scenario is acyclic (nothing but a remote can make a poller
//!   go round again), so any cycle found is a real busy loop.
//!
//! Counterexamples are shortest (BFS) paths; a busy loop's is the path to the cycle followed by one
//! turn of the cycle (`cycle_start` is where the cycle begins).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use aioctx::trace::Step;

use crate::scenario::Scenario;
use crate::system::{successors, Property, State};
use crate::trace::{Trace, TraceEvent};

/// A property violation with its counterexample.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The property.
    pub property: Property,
    /// The steps from the initial state (for a busy loop: to the cycle, then one turn of it).
    pub trace: Trace,
    /// For a busy loop: the index in `trace` where the cycle starts.
    pub cycle_start: Option<usize>,
    /// The state where the violation shows (the last state of the trace).
    pub state: State,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} violated; counterexample ({} steps):", self.property, self.trace.len())?;
        for (i, e) in self.trace.events.iter().enumerate() {
            if Some(i) == self.cycle_start {
                writeln!(f, "  -- cycle starts --")?;
            }
            writeln!(f, "  {i:3}: {e}")?;
        }
        write!(f, "final state: {}", self.state)
    }
}

/// The result of exploring one scenario.
#[derive(Debug, Clone)]
pub struct Exploration {
    /// The scenario's name.
    pub scenario: String,
    /// Distinct reachable states.
    pub states: usize,
    /// Transitions (edges) explored.
    pub transitions: usize,
    /// States with no successor.
    pub terminal_states: usize,
    /// The first (shortest) violation found for each violated property.
    pub violations: Vec<Violation>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Exploration {
    /// True if no property is violated.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violation of `p`, if found.
    pub fn violation(&self, p: Property) -> Option<&Violation> {
        self.violations.iter().find(|v| v.property == p)
    }
}

struct Graph {
    states: Vec<State>,
    ids: HashMap<State, u32>,
    /// How each state was first reached: (parent, event).
    parent: Vec<Option<(u32, TraceEvent)>>,
    /// Outgoing edges: (target, step).
    edges: Vec<Vec<(u32, Step)>>,
}

impl Graph {
    fn path_to(&self, mut id: u32) -> Vec<TraceEvent> {
        let mut v = Vec::new();
        while let Some((p, e)) = &self.parent[id as usize] {
            v.push(e.clone());
            id = *p;
        }
        v.reverse();
        v
    }
}

/// Explore every reachable state of `scenario` and check the four properties.
///
/// # Panics
///
/// On a model invariant violation (e.g. `notify_me` underflow), which is a bug in the model.
pub fn explore(scenario: &Scenario) -> Exploration {
    let start = Instant::now();
    let init = State::initial(scenario);
    let mut g = Graph {
        states: vec![init.clone()],
        ids: HashMap::from([(init, 0)]),
        parent: vec![None],
        edges: vec![Vec::new()],
    };
    let mut violations: Vec<Violation> = Vec::new();
    let record = |violations: &mut Vec<Violation>, g: &Graph, p: Property, id: u32| {
        if violations.iter().all(|v| v.property != p) {
            violations.push(Violation {
                property: p,
                trace: Trace { events: g.path_to(id) },
                cycle_start: None,
                state: g.states[id as usize].clone(),
            });
        }
    };
    let mut queue = VecDeque::from([0u32]);
    let mut transitions = 0;
    let mut terminal_states = 0;
    while let Some(id) = queue.pop_front() {
        let st = g.states[id as usize].clone();
        if let Some(p) = st.safety_violation() {
            record(&mut violations, &g, p, id);
        }
        let succs = successors(scenario, &st);
        if succs.is_empty() {
            terminal_states += 1;
            if st.lost_wakeup() {
                record(&mut violations, &g, Property::NoLostWakeup, id);
            }
        }
        for tr in succs {
            transitions += 1;
            let step = tr.event.step;
            let next_id = match g.ids.get(&tr.next) {
                Some(&n) => n,
                None => {
                    let n = g.states.len() as u32;
                    g.ids.insert(tr.next.clone(), n);
                    g.states.push(tr.next);
                    g.parent.push(Some((id, tr.event)));
                    g.edges.push(Vec::new());
                    queue.push_back(n);
                    n
                }
            };
            g.edges[id as usize].push((next_id, step));
        }
    }
    if let Some(v) = find_busy_loop(scenario, &g) {
        violations.push(v);
    }
    violations.sort_by_key(|v| v.property);
    Exploration {
        scenario: scenario.name.clone(),
        states: g.states.len(),
        transitions,
        terminal_states,
        violations,
        elapsed: start.elapsed(),
    }
}

fn progress(step: Step) -> bool {
    step == Step::BhPollCall
}

fn starts_iteration(step: Step) -> bool {
    matches!(step, Step::CtxPollComputeTimeout | Step::CtxPrepareNotifyMeOr)
}

/// Tarjan's algorithm (iterative) over the non-progress edges: the SCC index of every state.
fn sccs(g: &Graph) -> Vec<u32> {
    const UNSEEN: u32 = u32::MAX;
    let n = g.states.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0u32; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![UNSEEN; n];
    let mut stack: Vec<u32> = Vec::new();
    let mut next_index = 0u32;
    let mut next_comp = 0u32;
    for root in 0..n as u32 {
        if index[root as usize] != UNSEEN {
            continue;
        }
        // (node, next edge to look at)
        let mut call: Vec<(u32, usize)> = vec![(root, 0)];
        index[root as usize] = next_index;
        low[root as usize] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root as usize] = true;
        while let Some(&mut (v, ref mut ei)) = call.last_mut() {
            let edges = &g.edges[v as usize];
            if let Some(&(w, step)) = edges.get(*ei) {
                *ei += 1;
                if progress(step) {
                    continue;
                }
                if index[w as usize] == UNSEEN {
                    index[w as usize] = next_index;
                    low[w as usize] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w as usize] = true;
                    call.push((w, 0));
                } else if on_stack[w as usize] {
                    low[v as usize] = low[v as usize].min(index[w as usize]);
                }
            } else {
                call.pop();
                if let Some(&(u, _)) = call.last() {
                    low[u as usize] = low[u as usize].min(low[v as usize]);
                }
                if low[v as usize] == index[v as usize] {
                    loop {
                        let w = stack.pop().expect("Tarjan stack underflow");
                        on_stack[w as usize] = false;
                        comp[w as usize] = next_comp;
                        if w == v {
                            break;
                        }
                    }
                    next_comp += 1;
                }
            }
        }
    }
    comp
}

fn find_busy_loop(sc: &Scenario, g: &Graph) -> Option<Violation> {
    let comp = sccs(g);
    // An iteration-starting, non-progress edge inside one SCC, in a state where every remote is done.
    let (u, v) = (0..g.states.len() as u32).find_map(|u| {
        if !g.states[u as usize].remotes_done() {
            return None;
        }
        g.edges[u as usize].iter().find_map(|&(v, step)| {
            (starts_iteration(step) && comp[u as usize] == comp[v as usize]).then_some((u, v))
        })
    })?;
    // Path from v back to u inside the SCC, over non-progress edges (BFS).
    let c = comp[u as usize];
    let mut prev: HashMap<u32, u32> = HashMap::new();
    let mut q = VecDeque::from([v]);
    let mut seen = std::collections::HashSet::from([v]);
    while let Some(x) = q.pop_front() {
        if x == u {
            break;
        }
        for &(y, step) in &g.edges[x as usize] {
            if !progress(step) && comp[y as usize] == c && seen.insert(y) {
                prev.insert(y, x);
                q.push_back(y);
            }
        }
    }
    let mut cycle_nodes = vec![u];
    let mut x = u;
    while x != v {
        x = prev[&x];
        cycle_nodes.push(x);
    }
    cycle_nodes.push(u);
    cycle_nodes.reverse(); // u, v, ..., u
    let mut events = g.path_to(u);
    let cycle_start = events.len();
    for w in cycle_nodes.windows(2) {
        let (a, b) = (&g.states[w[0] as usize], &g.states[w[1] as usize]);
        let tr = successors(sc, a)
            .into_iter()
            .find(|t| &t.next == b && !progress(t.event.step))
            .expect("cycle edge not found");
        events.push(tr.event);
    }
    Some(Violation {
        property: Property::NoBusyLoop,
        trace: Trace { events },
        cycle_start: Some(cycle_start),
        state: g.states[u as usize].clone(),
    })
}
