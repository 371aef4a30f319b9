//! Splits and losses that must heal: a 50/50 partition, the genesis dying, a frozen node
//! coming back.

use std::time::Duration;

use super::fixtures::{formed, name, until, until_formed};
use super::{Sim, addr_of};

/// Every running node of `side` lists exactly `side` as members.
fn knows_only(sim: &Sim, side: &[String]) -> Result<(), String> {
    let mut expected = side.to_vec();
    expected.sort();
    for n in side {
        let members = sim.members(n);
        if members != expected {
            return Err(format!("{n} lists {members:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_network_split_in_half_merges_again_after_healing() {
    let mut sim = formed(20, |_| {});
    let left: Vec<String> = (0..10).map(name).collect();
    let right: Vec<String> = (10..20).map(name).collect();
    sim.partition(&[&left]);

    // Each half declares the other dead and closes ranks.
    until(&mut sim, "two separate halves", |s| {
        knows_only(s, &left)?;
        knows_only(s, &right)
    });
    sim.run_for(Duration::from_secs(10));
    assert!(sim.check_connected().is_err(), "the halves cannot meet");
    knows_only(&sim, &left).unwrap();
    knows_only(&sim, &right).unwrap();
    sim.check_degrees(2).unwrap();

    sim.heal();
    let took = until_formed(&mut sim, 2);
    // Dead members are retried with a back-off capped at 10 s.
    assert!(took <= Duration::from_secs(30), "merged after {took:?}");
    sim.run_for(Duration::from_secs(20));
    sim.check_formed(2).unwrap();
}

#[test]
fn losing_the_genesis_after_formation_changes_nothing_and_newcomers_use_the_second() {
    let genesis = [addr_of("n00"), addr_of("n01")];
    let mut sim = formed(10, |cfg| {
        if cfg.id != "n00" {
            cfg.genesis = genesis.to_vec();
        }
    });
    sim.kill("n00");
    until(&mut sim, "n00 forgotten", |s| s.check_members());
    sim.run_for(Duration::from_secs(10));
    sim.check_formed(2).unwrap();

    let mut cfg = super::node_config("n10", &[]);
    cfg.genesis = genesis.to_vec();
    sim.spawn_with(cfg);
    until_formed(&mut sim, 2);
    let dials = sim.dials_from("n10");
    assert_eq!(
        dials[..2],
        genesis,
        "tried the dead genesis, then the second"
    );
    assert!(sim.members("n10").len() == 10);
    assert!(!sim.members("n10").contains(&"n00".to_string()));
}

#[test]
fn a_node_frozen_long_enough_to_be_declared_dead_rejoins_when_thawed() {
    let mut sim = formed(10, |_| {});
    sim.freeze("n04");
    until(&mut sim, "n04 declared dead", |s| s.check_members());
    sim.thaw("n04");
    until_formed(&mut sim, 2);
    assert!(sim.members("n00").contains(&"n04".to_string()));
}
