//! `network_key: per-run` on the local runtime: the run's nodes form with a key drawn for
//! the run and handed over in their environment (never their command line, logs, report or
//! `/status`), a process without the key, or with another one, pointed at the run's genesis
//! cannot join, and one given the run's key can (so it is the key that keeps the others out).

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab::Lab;
use peerlab::lab::{GroupSpec, NetworkKeyMode, NodeSettings, RuntimeKind};
use peerlab::runtime::local::scan_processes;

use crate::support::cli::{Workspace, assert_gone_within, processes_of};
use crate::support::cluster::{self, Spec};
use crate::support::{BIN, poll_until};

const FORM_WITHIN: Duration = Duration::from_secs(40);

/// `PEERLAB_NETWORK_KEY` in the environment of process `pid`, and whether its command
/// line holds `secret`.
fn key_of(pid: u32, secret: Option<&str>) -> (Option<String>, bool) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let key = environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("PEERLAB_NETWORK_KEY="))
        .map(str::to_string);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let in_argv = secret.is_some_and(|s| String::from_utf8_lossy(&cmdline).contains(s));
    (key, in_argv)
}

#[tokio::test]
async fn only_nodes_holding_the_runs_key_join_a_per_run_keyed_network() {
    let runs = tempfile::tempdir().expect("tempdir");
    let settings = NodeSettings {
        degree: 2,
        ..NodeSettings::BUILT_IN
    };
    let mut lab = Lab::builder("keyed")
        .genesis(1)
        .node_settings(settings)
        .group(GroupSpec::new("peers", 2))
        .network_key(NetworkKeyMode::PerRun)
        .formation_within(FORM_WITHIN)
        .into_lab()
        .expect("a valid topology")
        .runtime(RuntimeKind::Local)
        .node_binary(BIN)
        .runs_dir(runs.path())
        .start()
        .await
        .expect("the lab starts");
    let run_id = lab.run_id().to_string();
    let formed = lab.wait_formed(FORM_WITHIN).await.expect("started");
    assert!(formed.formed(), "{:#?}", formed.failures());

    // Every node got the same key, in its environment and not on its command line.
    let pids: Vec<u32> = scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .map(|p| p.pid)
        .collect();
    assert_eq!(pids.len(), 3, "every node runs");
    let keys: BTreeSet<String> = pids.iter().filter_map(|pid| key_of(*pid, None).0).collect();
    let [key] = <[String; 1]>::try_from(keys.into_iter().collect::<Vec<_>>())
        .unwrap_or_else(|k| panic!("one key for every node, got {} keys", k.len()));
    assert_eq!(key.len(), 64, "a drawn key: 256 bits as hex");
    for pid in &pids {
        assert!(!key_of(*pid, Some(&key)).1, "the key is on a command line");
    }

    let report = lab.check().await.expect("the checks run");
    assert!(report.passed(), "{}", report.summary());
    assert!(
        !report.to_json().expect("json").contains(&key),
        "the key is in the report"
    );

    let genesis = lab.node("genesis-0").expect("a handle");
    let genesis_addr = genesis.peer_addr().to_string();
    let refused_before = genesis
        .status()
        .await
        .expect("status")
        .counters
        .identity_refused;

    // Two outsiders (no key; another key) and, as the control, an insider with the run's key.
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |name: &str, key: Option<&str>| {
        let spec = Spec {
            env_removed: vec!["PEERLAB_NETWORK_KEY".into()],
            env: key
                .map(|k| vec![("PEERLAB_NETWORK_KEY".to_string(), k.to_string())])
                .unwrap_or_default(),
            ..Spec::new(name).genesis(&genesis_addr)
        };
        cluster::spawn(dir.path(), spec)
    };
    let keyless = start("keyless", None).ready(Duration::from_secs(20)).await;
    let other_key = "a different network key for this test";
    let stranger = start("stranger", Some(other_key))
        .ready(Duration::from_secs(20))
        .await;
    let insider = start("insider", Some(&key))
        .ready(Duration::from_secs(20))
        .await;

    let run_nodes: BTreeSet<String> = lab.node_names().into_iter().collect();
    let mut expected = run_nodes.clone();
    expected.insert(insider.id().to_string());
    // The genesis refuses both outsiders' handshakes, and the insider joins everywhere.
    poll_until(
        FORM_WITHIN,
        "the insider is a member everywhere and the genesis refused both outsiders",
        || {
            let nodes = lab.nodes();
            let expected = &expected;
            let insider = &insider;
            async move {
                let mut refused = 0;
                for node in &nodes {
                    let status = node.status().await.ok()?;
                    let members: BTreeSet<String> =
                        status.members.iter().map(|m| m.id.clone()).collect();
                    if &members != expected {
                        return None;
                    }
                    if node.name() == "genesis-0" {
                        refused = status.counters.identity_refused;
                    }
                }
                let insider_status = insider.client.status().await.ok()?;
                (insider_status.joined && refused >= refused_before + 2).then_some(())
            }
        },
    )
    .await;

    // Refused for the key, by name: the keyless one by the genesis; the stranger by the
    // genesis or, when its own check ran first and closed the connection, by itself.
    let genesis_log = lab.run_dir().join("logs").join("genesis-0.log");
    let refusal = |log: &str, peer: &str| {
        log.lines().any(|l| {
            l.contains("its hello lacks this network's key")
                && l.contains(&format!("member={peer}"))
        })
    };
    poll_until(
        Duration::from_secs(10),
        "refusals for the network key in the logs",
        || {
            let genesis_log = std::fs::read_to_string(&genesis_log).unwrap_or_default();
            let stranger_log = stranger.log_text();
            let found = refusal(&genesis_log, "keyless")
                && (refusal(&genesis_log, "stranger") || refusal(&stranger_log, "genesis-0"));
            async move { found.then_some(()) }
        },
    )
    .await;

    for outsider in [&keyless, &stranger] {
        let status = outsider
            .client
            .status()
            .await
            .expect("the outsider answers");
        assert!(!status.joined, "{} joined: {status:?}", outsider.name);
        let known: Vec<&str> = status.members.iter().map(|m| m.id.as_str()).collect();
        assert!(
            known.iter().all(|id| !run_nodes.contains(*id)),
            "{} learned the run's members {known:?}",
            outsider.name
        );
        assert!(
            status.neighbours.is_empty(),
            "{} has links: {:?}",
            outsider.name,
            status.neighbours
        );
    }
    // The run's nodes still know exactly themselves and the insider, and say nothing of
    // the key on `/status` or in their logs.
    for node in lab.nodes() {
        let status = node.status().await.expect("status");
        let ids: BTreeSet<String> = status.members.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, expected, "{}", node.name());
        let text = serde_json::to_string(&status).expect("json");
        assert!(
            !text.contains(&key),
            "{} shows the key on /status",
            node.name()
        );
        let log = std::fs::read_to_string(
            lab.run_dir()
                .join("logs")
                .join(format!("{}.log", node.name())),
        )
        .expect("the node's log");
        assert!(!log.contains(&key), "{} logs the key", node.name());
    }

    drop((keyless, stranger, insider));
    let removed = lab.shutdown().await.expect("teardown");
    assert!(removed.leftovers.is_empty(), "{removed:?}");
}

/// `peerlab up` of `yaml` in `ws` with `PEERLAB_NETWORK_KEY=key`: the run id, the nodes'
/// keys (from their environments) and the run's `network-key` file with its mode, all read
/// before the run is taken down again, so a failed assertion leaves no process behind.
fn up_and_down(
    ws: &Workspace,
    yaml: &str,
    key: &str,
) -> (Vec<Option<String>>, Option<(String, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let topology = ws.write("keyed.yaml", yaml);
    let topology = topology.to_string_lossy();
    let out = ws.peerlab_with_env(
        &["up", &topology, "--runtime", "local"],
        &[("PEERLAB_NETWORK_KEY", key)],
    );
    let run_id = out.run_id();
    let found = run_id.as_deref().map(|run_id| {
        let keys: Vec<Option<String>> = processes_of(run_id)
            .into_iter()
            .map(|pid| key_of(pid, None).0)
            .collect();
        let path = ws.runs_dir().join(run_id).join("network-key");
        let file = std::fs::read_to_string(&path).ok().zip(
            std::fs::metadata(&path)
                .ok()
                .map(|m| m.permissions().mode() & 0o777),
        );
        let down = ws.peerlab(&["down", run_id]);
        assert_eq!(down.code(), Some(0), "{}", down.dump());
        assert_gone_within(run_id, Duration::from_secs(10));
        (keys, file)
    });
    assert_eq!(out.code(), Some(0), "{}", out.dump());
    let (keys, file) = found.unwrap_or_else(|| panic!("no run id:\n{}", out.dump()));
    (keys, file)
}

#[test]
fn up_hands_the_environments_key_to_its_nodes_and_keeps_it_for_nodes_started_by_hand() {
    let ws = Workspace::new("keyup");
    let key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let keyed = "name: keyup\nnetwork_key: from-env\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 1}\n";
    let (keys, file) = up_and_down(&ws, keyed, key);
    assert_eq!(
        keys,
        vec![Some(key.to_string()); 2],
        "both nodes hold the key"
    );
    let (text, mode) = file.expect("<run dir>/network-key");
    assert_eq!(text.trim(), key);
    assert_eq!(mode, 0o600, "readable by this user only");

    // Without `network_key:` the nodes need no key, and do not inherit peerlab's.
    let plain = keyed.replace("network_key: from-env\n", "");
    let (keys, file) = up_and_down(&ws, &plain, key);
    assert_eq!(keys, vec![None; 2], "a key was passed on");
    assert!(file.is_none(), "a network-key file without a key");
}
