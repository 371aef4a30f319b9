//! Shared set-ups for the simulator tests.

use std::time::Duration;

use super::{Sim, node_config};
use crate::node::machine::Config;

/// Generous virtual bound for a network to form or heal; tests fail past it.
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn name(i: usize) -> String {
    format!("n{i:02}")
}

/// Runs until `check` passes, or panics with what it last reported.
pub fn until(sim: &mut Sim, what: &str, check: impl Fn(&Sim) -> Result<(), String>) -> Duration {
    match sim.run_until(LIMIT, |s| check(s).is_ok()) {
        Some(took) => took,
        None => match check(sim) {
            Err(why) => panic!("{what} not reached within {LIMIT:?}: {why}"),
            Ok(()) => panic!("{what} reached only at the limit"),
        },
    }
}

/// Runs until the network is formed with every degree at least `min_degree`.
pub fn until_formed(sim: &mut Sim, min_degree: usize) -> Duration {
    until(sim, "a formed network", |s| s.check_formed(min_degree))
}

/// A formed network of `n` nodes `n00..`, `n00` the genesis, each configuration adjusted
/// by `tweak`; the joins are over (no flood in flight) when it returns.
pub fn formed(n: usize, tweak: impl Fn(&mut Config)) -> Sim {
    let mut sim = Sim::new();
    for i in 0..n {
        let genesis: &[&str] = if i == 0 { &[] } else { &["n00"] };
        let mut cfg = node_config(&name(i), genesis);
        tweak(&mut cfg);
        sim.spawn_with(cfg);
        sim.run_for(Duration::from_millis(300));
    }
    until_formed(&mut sim, 2.min(n - 1));
    sim.run_for(Duration::from_secs(5));
    sim.check_formed(2.min(n - 1))
        .unwrap_or_else(|why| panic!("the network came apart while settling: {why}"));
    sim
}
