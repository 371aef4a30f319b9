//! Checks and reports on synthetic networks: no sockets, no processes.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use peerlab::contract::{Counters, DeliveredMessage, NodeStatus, PeerRef, members_digest};
use peerlab::orchestrator::{
    BroadcastExpectation, CheckResult, FormationExpectation, InjectedBroadcast, NodeObservation,
    Overlay, RenderOptions, Report, RunMeta, evaluate_broadcast, evaluate_formation,
    formation_time, junit, summary_text, to_dot, to_svg, to_svg_with,
};

fn name(i: usize) -> String {
    if i == 0 {
        "genesis-0".to_string()
    } else {
        format!("peers-{i}")
    }
}

fn peer(i: usize) -> PeerRef {
    PeerRef {
        id: format!("id-{i:02}"),
        addr: format!("127.0.1.{i}:7070"),
    }
}

/// `n` ready nodes, links from `edges` reported by both ends, full membership.
fn network(n: usize, edges: &[(usize, usize)]) -> Vec<NodeObservation> {
    (0..n)
        .map(|i| {
            let neighbours = edges
                .iter()
                .filter_map(|&(a, b)| match (a == i, b == i) {
                    (true, _) => Some(peer(b)),
                    (_, true) => Some(peer(a)),
                    _ => None,
                })
                .collect();
            NodeObservation {
                name: name(i),
                status_url: format!("http://127.0.0.1:{}", 9000 + i),
                status: Some(NodeStatus {
                    id: peer(i).id,
                    name: Some(name(i)),
                    addr: peer(i).addr,
                    genesis: i == 0,
                    joined: true,
                    neighbours,
                    members: (0..n).map(peer).collect(),
                    member_count: None,
                    members_digest: None,
                    suspects: vec![],
                    target_degree: 4,
                    counters: Counters::default(),
                    uptime_secs: 10.0,
                    version: "test".into(),
                    public_key: String::new(),
                }),
                error: None,
                ready_after: Some(Duration::from_millis(100 + 10 * i as u64)),
            }
        })
        .collect()
}

/// A ring plus chords to the node five ahead: every node has degree 4.
fn ring_with_chords(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|i| [(i, (i + 1) % n), (i, (i + 5) % n)])
        .collect()
}

fn everything() -> FormationExpectation {
    FormationExpectation {
        all_ready: true,
        connected: true,
        components: None,
        min_degree: Some(2),
        max_degree: Some(8),
        full_membership: true,
        component_membership: false,
    }
}

fn check<'a>(results: &'a [CheckResult], prefix: &str) -> &'a CheckResult {
    results
        .iter()
        .find(|c| c.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no check named {prefix}: {results:?}"))
}

fn meta() -> RunMeta {
    RunMeta {
        run_id: "ring-1a2b".into(),
        topology: "ring".into(),
        runtime: "local".into(),
        seed: 7,
        started_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        formation_time: Some(Duration::from_millis(290)),
    }
}

const SENT: f64 = 1_700_000_010.0;

fn broadcast_id() -> String {
    "ab".repeat(32)
}

/// Every node delivered the broadcast injected at genesis-0 once, within 0.1 s.
fn deliveries(n: usize) -> BTreeMap<String, Vec<DeliveredMessage>> {
    (0..n)
        .map(|i| {
            let m = DeliveredMessage {
                id: broadcast_id(),
                title: "#BROADCAST".into(),
                message: "hello".into(),
                origin: peer(0).id,
                time: SENT,
                hops: (i as u32).min(3),
                received_at: SENT + 0.01 * i as f64,
            };
            (name(i), vec![m])
        })
        .collect()
}

fn injected() -> Vec<InjectedBroadcast> {
    vec![InjectedBroadcast {
        id: broadcast_id(),
        from: name(0),
        sent_at_unix: SENT,
    }]
}

fn live(n: usize) -> Vec<String> {
    (0..n).map(name).collect()
}

fn expect_broadcast() -> BroadcastExpectation {
    BroadcastExpectation {
        deliver_within: Duration::from_secs(2),
        reliability: 1.0,
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn healthy_ring_with_chords_passes_everything() {
    let obs = network(20, &ring_with_chords(20));
    let mut checks = evaluate_formation(&obs, &everything());
    assert_eq!(checks.len(), 5);
    assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
    assert_eq!(
        check(&checks, "overlay connected").measured,
        "1 component of 20 nodes"
    );
    assert_eq!(
        check(&checks, "min degree").measured,
        "min 4, avg 4.0, max 4"
    );

    let (stats, bchecks) =
        evaluate_broadcast(&injected(), &deliveries(20), &expect_broadcast(), &live(20));
    assert!(bchecks.iter().all(|c| c.passed), "{bchecks:#?}");
    let m = &stats.messages[0];
    assert_eq!((m.delivered, m.expected_receivers), (19, 19));
    assert_eq!(m.max_hops, Some(3));
    assert!((m.last_latency_secs.unwrap() - 0.19).abs() < 1e-6);
    assert!((m.first_latency_secs.unwrap() - 0.01).abs() < 1e-6);

    checks.extend(bchecks);
    let overlay = Overlay::build(&obs);
    let summary = overlay.summary();
    assert_eq!(summary.links, 40);
    assert!(summary.asymmetric_links.is_empty());
    assert_eq!(summary.diameter, Some(4), "8 is 5+1+1+1 away from 0");
    assert_eq!(formation_time(&obs), Some(Duration::from_millis(290)));

    let report = Report::new(meta(), &obs, &overlay, checks, Some(stats));
    assert!(report.passed);
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["passed"], serde_json::Value::Bool(true));
    assert_eq!(json["nodes"].as_array().unwrap().len(), 20);
    assert_eq!(json["nodes"][0]["neighbours"][0], "peers-1");
    let text = summary_text(&report);
    assert!(text.contains("PASSED: 8 of 8 checks passed"), "{text}");
    assert!(text.contains("genesis-0 *"), "{text}");
}

#[test]
fn disconnected_graph_fails_connected_naming_components() {
    let mut edges: Vec<(usize, usize)> = (0..10).map(|i| (i, (i + 1) % 10)).collect();
    edges.extend((10..20).map(|i| (i, 10 + (i + 1 - 10) % 10)));
    let obs = network(20, &edges);
    let checks = evaluate_formation(&obs, &everything());
    let c = check(&checks, "overlay connected");
    assert!(!c.passed);
    assert_eq!(c.measured, "2 components (sizes 10, 10)");
    let msg = c.message.as_deref().unwrap();
    assert!(msg.contains("[genesis-0, peers-1"), "{msg}");
    assert!(msg.contains("[peers-10, peers-11"), "{msg}");
    assert_eq!(c.value["components"], 2);
    // Everything else about this network is fine.
    assert!(check(&checks, "min degree").passed);
}

/// Two rings of ten (0..10 and 10..20), as a 50/50 partition leaves the overlay, plus
/// `bridges` links across.
fn two_halves(bridges: &[(usize, usize)]) -> Vec<NodeObservation> {
    let mut edges: Vec<(usize, usize)> = (0..10).map(|i| (i, (i + 1) % 10)).collect();
    edges.extend((10..20).map(|i| (i, 10 + (i + 1 - 10) % 10)));
    edges.extend_from_slice(bridges);
    network(20, &edges)
}

fn components(n: usize) -> FormationExpectation {
    FormationExpectation {
        components: Some(n),
        ..FormationExpectation::default()
    }
}

#[test]
fn component_count_holds_for_a_split_and_names_the_sides() {
    let checks = evaluate_formation(&two_halves(&[]), &components(2));
    assert_eq!(checks.len(), 1, "only the requested check: {checks:?}");
    let c = check(&checks, "overlay has 2 components");
    assert!(c.passed, "{c:?}");
    assert_eq!(c.expected, "2 components");
    assert_eq!(c.measured, "2 components (sizes 10, 10)");
    assert_eq!(c.value["components"], 2);
    assert_eq!(c.value["sizes"], serde_json::json!([10, 10]));
}

#[test]
fn component_count_fails_while_a_link_crosses_the_cut() {
    let checks = evaluate_formation(&two_halves(&[(4, 15)]), &components(2));
    let c = check(&checks, "overlay has 2 components");
    assert!(!c.passed);
    assert_eq!(c.measured, "1 component of 20 nodes");
    let msg = c.message.as_deref().unwrap();
    assert!(msg.contains("fewer than 2"), "{msg}");
    assert!(msg.contains("links still cross the cut"), "{msg}");
}

#[test]
fn component_count_fails_on_too_many_parts_and_counts_only_answering_nodes() {
    // 0..10 ring, 10..20 ring, and node 19 cut off from its ring: three parts.
    let mut edges: Vec<(usize, usize)> = (0..10).map(|i| (i, (i + 1) % 10)).collect();
    edges.extend((10..18).map(|i| (i, i + 1)));
    let mut obs = network(20, &edges);
    let checks = evaluate_formation(&obs, &components(2));
    let c = check(&checks, "overlay has 2 components");
    assert!(!c.passed);
    assert_eq!(c.measured, "3 components (sizes 10, 9, 1)");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.contains("more than 2") && msg.contains("[peers-19]"),
        "{msg}"
    );
    // A node that does not answer is no component of its own, and is named.
    obs[19].status = None;
    obs[19].error = Some("connection refused".into());
    let checks = evaluate_formation(&obs, &components(2));
    let c = check(&checks, "overlay has 2 components");
    assert!(c.passed, "{c:?}");
    let checks = evaluate_formation(&obs, &components(3));
    let c = check(&checks, "overlay has 3 components");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.contains("not counted, status did not answer: peers-19"),
        "{msg}"
    );
}

/// [`two_halves`] where each node knows only its own half, as once a partition's sides
/// removed each other.
fn two_forgetful_halves() -> Vec<NodeObservation> {
    let mut obs = two_halves(&[]);
    for (i, o) in obs.iter_mut().enumerate() {
        let half = if i < 10 { 0..10 } else { 10..20 };
        o.status.as_mut().unwrap().members = half.map(peer).collect();
    }
    obs
}

#[test]
fn membership_per_component_holds_when_each_side_knows_exactly_its_side() {
    let expect = FormationExpectation {
        components: Some(2),
        component_membership: true,
        ..FormationExpectation::default()
    };
    let checks = evaluate_formation(&two_forgetful_halves(), &expect);
    assert_eq!(checks.len(), 2);
    let c = check(&checks, "membership per component");
    assert!(c.passed, "{c:?}");
    assert_eq!(c.measured, "20/20 nodes match");
    // Full membership is what a split network cannot have.
    let full = FormationExpectation {
        full_membership: true,
        ..FormationExpectation::default()
    };
    assert!(!evaluate_formation(&two_forgetful_halves(), &full)[0].passed);
}

#[test]
fn membership_per_component_names_members_across_the_cut() {
    // Split overlay, but everyone still lists all twenty: the sides did not notice yet.
    let checks = evaluate_formation(
        &two_halves(&[]),
        &FormationExpectation {
            component_membership: true,
            ..FormationExpectation::default()
        },
    );
    let c = check(&checks, "membership per component");
    assert!(!c.passed);
    assert_eq!(c.measured, "0/20 nodes match");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.starts_with(
            "20 of 20 nodes disagree with their overlay component: 10 nodes (genesis-0, peers-1,"
        ),
        "{msg}"
    );
    assert!(msg.contains("extra peers-10, peers-11"), "{msg}");
    assert!(msg.contains("(of another component)"), "{msg}");
    // On one connected overlay it is full membership.
    let whole = network(20, &ring_with_chords(20));
    let c = evaluate_formation(
        &whole,
        &FormationExpectation {
            component_membership: true,
            ..FormationExpectation::default()
        },
    )
    .remove(0);
    assert!(c.passed, "{c:?}");
}

#[test]
fn one_component_is_the_healed_network() {
    let whole = network(20, &ring_with_chords(20));
    let c = evaluate_formation(&whole, &components(1)).remove(0);
    assert!(c.passed, "{c:?}");
    assert_eq!(c.name, "overlay has 1 component");
    let c = evaluate_formation(&two_halves(&[]), &components(1)).remove(0);
    assert!(!c.passed);
    assert!(c.message.unwrap().contains("more than 1"));
}

#[test]
fn under_degree_node_fails_min_degree_naming_it() {
    let edges: Vec<(usize, usize)> = ring_with_chords(20)
        .into_iter()
        .filter(|&e| ![(7, 8), (7, 12), (2, 7)].contains(&e))
        .collect();
    let obs = network(20, &edges);
    let checks = evaluate_formation(&obs, &everything());
    let c = check(&checks, "min degree >= 2");
    assert!(!c.passed);
    assert_eq!(c.measured, "min 1, avg 3.7, max 4");
    assert_eq!(
        c.message.as_deref(),
        Some("1 node(s) have fewer than 2 neighbours: peers-7 (1)")
    );
    assert!(check(&checks, "max degree <= 8").passed);
    assert!(check(&checks, "overlay connected").passed);
    let report = Report::new(meta(), &obs, &Overlay::build(&obs), checks, None);
    let text = summary_text(&report);
    let row = text.lines().find(|l| l.starts_with("peers-7 ")).unwrap();
    assert!(row.ends_with("DEGREE OUT OF BOUNDS"), "{row}");
}

#[test]
fn crowded_node_fails_max_degree() {
    let mut edges = ring_with_chords(20);
    edges.extend([(3, 9), (3, 10), (3, 11)]);
    let obs = network(20, &edges);
    let mut expect = everything();
    expect.max_degree = Some(6);
    let checks = evaluate_formation(&obs, &expect);
    let c = check(&checks, "max degree <= 6");
    assert!(!c.passed);
    assert!(
        c.message.as_deref().unwrap().contains("peers-3 (7)"),
        "{c:?}"
    );
}

/// Node `node` lists `stranger` (a node that is not live) in place of member `dropped`.
fn swap_member(obs: &mut [NodeObservation], node: usize, dropped: &str, stranger: &str) {
    let status = obs[node].status.as_mut().unwrap();
    status.members.retain(|p| p.id != dropped);
    status.members.push(PeerRef {
        id: stranger.into(),
        addr: "127.0.1.99:7070".into(),
    });
}

/// Full membership fails with exactly one of the 20 nodes disagreeing; its message.
fn one_node_disagrees(obs: &[NodeObservation]) -> String {
    let checks = evaluate_formation(obs, &everything());
    let c = check(&checks, "full membership");
    assert!(!c.passed);
    assert_eq!(c.measured, "19/20 nodes match");
    c.message.clone().unwrap()
}

#[test]
fn inconsistent_membership_names_node_and_missing_member() {
    let mut obs = network(20, &ring_with_chords(20));
    swap_member(&mut obs, 4, "id-09", "deadbeef00");
    let msg = one_node_disagrees(&obs);
    assert!(
        msg.contains("peers-4: missing peers-9, extra deadbeef@127.0.1.99:7070 (not a live node)"),
        "{msg}"
    );
}

/// What a poll sees with `?members=false`: counts and digests, no lists.
fn brief(obs: &mut [NodeObservation]) {
    for o in obs {
        let s = o.status.as_mut().unwrap();
        s.member_count = Some(s.members.len());
        s.members_digest = Some(members_digest(s.members.iter().map(|m| m.id.as_str())));
        s.members.clear();
    }
}

#[test]
fn membership_is_decided_from_digests_when_the_lists_were_not_fetched() {
    let mut obs = network(20, &ring_with_chords(20));
    obs[4]
        .status
        .as_mut()
        .unwrap()
        .members
        .retain(|p| p.id != "id-09");
    brief(&mut obs);
    let msg = one_node_disagrees(&obs);
    assert!(
        msg.contains("peers-4: knows 19 members, 20 expected"),
        "{msg}"
    );

    let mut agreeing = network(20, &ring_with_chords(20));
    brief(&mut agreeing);
    let checks = evaluate_formation(&agreeing, &everything());
    assert!(check(&checks, "full membership").passed, "{checks:?}");
}

#[test]
fn a_served_digest_that_disagrees_with_the_same_count_still_fails() {
    // Same size, other members: only the digest can tell.
    let mut obs = network(20, &ring_with_chords(20));
    swap_member(&mut obs, 7, "id-03", "stranger");
    brief(&mut obs);
    let checks = evaluate_formation(&obs, &everything());
    let c = check(&checks, "full membership");
    assert!(!c.passed, "{c:?}");
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("peers-7: knows 20 members, but not the expected ones"),
        "{c:?}"
    );
}

#[test]
fn unready_node_fails_all_ready_with_reason() {
    let mut obs = network(20, &ring_with_chords(20));
    obs[5].status = None;
    obs[5].error = Some("connection refused".into());
    obs[5].ready_after = None;
    obs[6].status.as_mut().unwrap().joined = false;
    let checks = evaluate_formation(&obs, &everything());
    let c = check(&checks, "all nodes ready");
    assert!(!c.passed);
    assert_eq!(c.measured, "18/20 ready");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.contains(
            "peers-5 (status socket http://127.0.0.1:9005 did not answer: connection refused)"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("peers-6 (has not completed its join)"),
        "{msg}"
    );
    assert_eq!(formation_time(&obs), None);
    // A live node that does not answer cannot be shown connected: the check fails, naming it.
    let c = check(&checks, "overlay connected");
    assert!(!c.passed, "{c:?}");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.starts_with("1 live node(s) did not answer their status socket")
            && msg.contains("peers-5"),
        "{msg}"
    );
    // The silent node is named where connectivity is judged without it.
    let overlay = Overlay::build(&obs);
    assert_eq!(overlay.summary().answering, 19);
    // Its neighbours still list it: those links point to no observed node.
    assert!(!overlay.dangling.is_empty());
    // Everyone still lists the silent node: said once, not 19 times.
    let c = check(&checks, "full membership");
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.starts_with("19 of 19 nodes disagree with the live set: 19 nodes (genesis-0, peers-1,"),
        "{msg}"
    );
    assert!(
        msg.ends_with("extra id-05@127.0.1.5:7070 (not a live node)"),
        "{msg}"
    );
}

#[test]
fn one_sided_links_are_reported() {
    let mut obs = network(20, &ring_with_chords(20));
    obs[3]
        .status
        .as_mut()
        .unwrap()
        .neighbours
        .retain(|p| p.id != "id-04");
    let s = Overlay::build(&obs).summary();
    assert_eq!(
        s.asymmetric_links,
        vec![["peers-4".to_string(), "peers-3".to_string()]]
    );
    assert_eq!(s.links, 40);
}

#[test]
fn missing_delivery_fails_reliability() {
    let mut d = deliveries(20);
    d.get_mut("peers-3").unwrap().clear();
    d.remove("peers-11");
    let (stats, checks) = evaluate_broadcast(&injected(), &d, &expect_broadcast(), &live(20));
    let c = check(&checks, "broadcast reliability");
    assert!(!c.passed);
    assert_eq!(
        stats.messages[0].missing,
        vec!["peers-3".to_string(), "peers-11".to_string()]
    );
    let msg = c.message.as_deref().unwrap();
    assert!(
        msg.contains("reached 17/19 nodes, missing peers-3, peers-11"),
        "{msg}"
    );
    // A lower bar accepts the same spread.
    let lenient = BroadcastExpectation {
        reliability: 0.85,
        ..expect_broadcast()
    };
    let (_, checks) = evaluate_broadcast(&injected(), &d, &lenient, &live(20));
    assert!(check(&checks, "broadcast reliability").passed);
}

#[test]
fn late_delivery_fails_deadline() {
    let mut d = deliveries(20);
    d.get_mut("peers-4").unwrap()[0].received_at = SENT + 5.0;
    let (stats, checks) = evaluate_broadcast(&injected(), &d, &expect_broadcast(), &live(20));
    let c = check(&checks, "delivered within 2s");
    assert!(!c.passed);
    assert!(
        c.message.as_deref().unwrap().contains("late at peers-4"),
        "{c:?}"
    );
    assert_eq!(stats.max_latency_secs, Some(5.0));
    assert!(check(&checks, "broadcast reliability").passed);
}

#[test]
fn duplicate_delivery_is_flagged() {
    let mut d = deliveries(20);
    let copy = d["peers-6"][0].clone();
    d.get_mut("peers-6").unwrap().push(copy);
    let (stats, checks) = evaluate_broadcast(&injected(), &d, &expect_broadcast(), &live(20));
    let c = check(&checks, "no duplicate deliveries");
    assert!(!c.passed);
    assert_eq!(stats.duplicate_deliveries, 1);
    assert!(
        c.message
            .as_deref()
            .unwrap()
            .contains("peers-6 got abababab 2 times"),
        "{c:?}"
    );
    // A duplicate is still one delivery for reliability.
    assert_eq!(stats.messages[0].delivered, 19);
}

#[test]
fn no_injected_broadcast_fails_reliability() {
    let (_, checks) = evaluate_broadcast(&[], &deliveries(5), &expect_broadcast(), &live(5));
    assert!(!check(&checks, "broadcast reliability").passed);
}

fn failing_report() -> Report {
    let mut obs = network(20, &ring_with_chords(20));
    obs[5].status = None;
    obs[5].error = Some("refused <&\"quoted\">".into());
    obs[5].ready_after = None;
    let checks = evaluate_formation(&obs, &everything());
    Report::new(meta(), &obs, &Overlay::build(&obs), checks, None)
}

#[test]
fn junit_is_well_formed_with_one_case_per_check() {
    let report = failing_report();
    let failed = report.checks.iter().filter(|c| !c.passed).count();
    assert!(failed >= 1);
    let xml = junit(&report).unwrap();
    assert_eq!(count(&xml, "<testcase"), report.checks.len());
    assert_eq!(count(&xml, "<failure"), failed);
    assert!(xml.contains("&lt;&amp;"), "message must be escaped: {xml}");
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(parsed.test_suites.len(), 1);
    let suite = &parsed.test_suites[0];
    assert_eq!(suite.test_cases.len(), report.checks.len());
    assert_eq!(suite.failures, failed);
}

#[test]
fn json_report_has_top_level_passed_and_is_written() {
    let report = failing_report();
    assert!(!report.passed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/report.json");
    report.write_json(&path).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["passed"], serde_json::Value::Bool(false));
    assert_eq!(v["started_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v["formation_secs"], 0.29);
    assert_eq!(v["nodes"][5]["error"], "refused <&\"quoted\">");
}

#[test]
fn svg_draws_one_circle_per_node_deterministically() {
    for n in [1, 20, 300] {
        let obs = network(
            n,
            &ring_with_chords(n.max(6))
                .into_iter()
                .filter(|&(a, b)| a < n && b < n && a != b)
                .collect::<Vec<_>>(),
        );
        let overlay = Overlay::build(&obs);
        let svg = to_svg(&overlay);
        assert_eq!(count(&svg, "<circle"), n, "n={n}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg, to_svg(&overlay), "layout must be deterministic");
        assert!(!svg.contains("NaN"), "n={n}");
    }
}

#[test]
fn svg_marks_trouble_in_red_and_dot_lists_every_link() {
    let edges: Vec<(usize, usize)> = ring_with_chords(20)
        .into_iter()
        .filter(|&e| ![(7, 8), (7, 12), (2, 7)].contains(&e))
        .collect();
    let obs = network(20, &edges);
    let overlay = Overlay::build(&obs);
    let opts = RenderOptions {
        title: Some("ring <run>".into()),
        min_degree: Some(2),
    };
    let svg = to_svg_with(&overlay, &opts);
    assert_eq!(
        count(&svg, r##"fill="#d62728" stroke"##),
        1 + 1,
        "one node plus its legend swatch"
    );
    assert!(svg.contains("ring &lt;run&gt;"));
    assert!(svg.contains(">peers-7</text>"));
    let dot = to_dot(&overlay);
    assert!(dot.starts_with("graph overlay {"));
    assert_eq!(count(&dot, " -- "), overlay.edges.len());
    assert!(dot.contains("\"genesis-0\" -- \"peers-1\";"));
}

#[test]
fn summary_of_300_nodes_shows_the_worst() {
    let mut obs = network(300, &ring_with_chords(300));
    obs[123].status = None;
    obs[123].error = Some("timed out".into());
    obs[123].ready_after = None;
    let checks = evaluate_formation(&obs, &everything());
    let report = Report::new(meta(), &obs, &Overlay::build(&obs), checks, None);
    let text = summary_text(&report);
    assert!(text.lines().count() < 60, "{text}");
    assert!(text.contains("peers-123"), "{text}");
    assert!(text.contains("NO STATUS: timed out"), "{text}");
    assert!(
        text.contains("the 20 worst of 300 nodes; the other 280: 280 ready"),
        "{text}"
    );
    assert!(text.contains("FAIL  all nodes ready"), "{text}");
    assert!(text.contains("FAILED:"), "{text}");
}
