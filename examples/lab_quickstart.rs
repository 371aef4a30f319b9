//! A user's test of a p2p network with the peerlab library: start a topology on local
//! processes, wait until it formed, broadcast, kill a node and watch the network notice,
//! run the topology's checks, write the reports, shut down.
//!
//! It is a `#[tokio::test]` as you would write it in your own `tests/`; `cargo test
//! --example lab_quickstart` runs it (and so does `cargo test`), and `cargo run --example
//! lab_quickstart` runs the same steps as a program. The nodes run the `peerlab` executable:
//! next to this binary in a cargo build of peerlab, else `$PEERLAB_BIN`, else on the `PATH`.

use std::error::Error;
use std::time::Duration;

use peerlab::Lab;
use peerlab::lab::RuntimeKind;

/// Every step of the example; returns the run id so that callers can prove it is gone.
async fn quickstart() -> Result<String, Box<dyn Error>> {
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/quickstart.yaml");
    let runs = std::env::temp_dir().join("peerlab-example-runs");
    let mut lab = Lab::from_file(topology)?
        .runtime(RuntimeKind::Local)
        .runs_dir(&runs)
        .start()
        .await?;

    // Poll (no sleeps) until the topology's formation checks hold.
    let formed = lab.wait_formed(Duration::from_secs(30)).await?;
    assert!(formed.formed(), "not formed: {:#?}", formed.failures());

    // Look at a node, and flood a message from another.
    let genesis = lab.node("genesis-0")?.status().await?;
    assert_eq!(genesis.members.len(), 5);
    let id = lab.broadcast("peers-0", "hello from a test").await?;
    let delivery = lab.wait_delivered(&[id], Duration::from_secs(10)).await?;
    assert!(delivery.complete(), "missing at {:?}", delivery.missing());

    // Kill a peer; the survivors must drop it from their member lists.
    lab.kill("peers-3").await?;
    let healed = lab.wait_formed(Duration::from_secs(30)).await?;
    assert!(healed.formed(), "{:#?}", healed.failures());

    // The topology's own checks, and the reports `peerlab run` writes.
    let report = lab.check().await?;
    report.write_json(&lab.run_dir().join("report.json"))?;
    report.write_junit(&lab.run_dir().join("junit.xml"))?;
    report.write_graph(&lab.run_dir().join("overlay.svg"))?;
    assert!(report.passed(), "{}", report.summary());

    let run_id = lab.run_id().to_string();
    let removed = lab.shutdown().await?;
    assert!(removed.leftovers.is_empty(), "{:?}", removed.leftovers);
    Ok(run_id)
}

#[tokio::test]
async fn quickstart_forms_delivers_and_survives_a_kill() {
    let run_id = quickstart().await.expect("the example runs");
    let left: Vec<_> = peerlab::runtime::local::scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .collect();
    assert!(left.is_empty(), "the example left {left:?}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let run_id = quickstart().await?;
    println!("{run_id}: formed, delivered, survived a kill, passed its checks, torn down");
    Ok(())
}
