//! `peerlab::testcontainers` as a testcontainers user would use it: a genesis and two peers
//! on one Docker network form one overlay, and nothing is left when the containers drop.
//! Needs a Docker engine and fails, not skips, without one (CI has one). Built only with the
//! `testcontainers` feature (`required-features` in Cargo.toml).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptionsBuilder};
use peerlab::client::StatusClient;
use peerlab::contract::NodeStatus;
use peerlab::testcontainers::{PEER_PORT, PeerlabNode, status_url};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};

/// Tag of the image each test builds from the cargo-built binary, then removes.
const TAG: &str = "test";
/// How long three containers may take to see each other once all are ready.
const FORMED_WITHIN: Duration = Duration::from_secs(30);
/// Interval between status polls; the loop's deadline is `FORMED_WITHIN`.
const POLL: Duration = Duration::from_millis(200);
/// Generous for a busy 2-core machine; a ready genesis takes well under a second.
const STARTUP: Duration = Duration::from_secs(60);

/// `tc<pid><nanos>`: lower-case alphanumerics, valid in image, container and network names.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("tc{:x}{:x}", std::process::id(), nanos & 0xff_ffff_ffff)
}

async fn docker() -> Docker {
    peerlab::runtime::docker::image::connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs Docker: {e}"))
}

/// Containers (running or not) that carry `peerlab.run=<run>`.
async fn containers_of(docker: &Docker, run: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("peerlab.run={run}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("cannot list containers")
        .into_iter()
        .map(|c| c.id.unwrap_or_default())
        .collect()
}

/// Whether a network of exactly this name exists (a name filter would match substrings).
async fn network_exists(docker: &Docker, name: &str) -> bool {
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => true,
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("cannot inspect network {name}: {e}"),
    }
}

/// One node's client, through the host port testcontainers mapped to its status socket.
async fn client(container: &ContainerAsync<PeerlabNode>) -> StatusClient {
    let url = status_url(container)
        .await
        .expect("the status port is mapped");
    StatusClient::new(&url, Duration::from_secs(2)).expect("an HTTP client")
}

/// Starts a genesis and two peers of `image` on the network `net`, and checks that they
/// form one overlay. The containers drop (and are removed) when this returns or panics.
async fn genesis_and_two_peers(image: String, run: String) {
    let net = format!("peerlab-{run}");
    let genesis_host = format!("peerlab-{run}-genesis");
    let node = |base: PeerlabNode, name: &str| {
        base.with_image(image.clone(), TAG)
            .with_node_name(name)
            .with_degree(2)
    };

    let genesis = node(PeerlabNode::genesis(), "genesis");
    genesis
        .require_local_image()
        .await
        .expect("the image was just built");
    let genesis = genesis
        .with_container_name(&genesis_host)
        .with_network(&net)
        .with_label("peerlab.run", &run)
        .with_startup_timeout(STARTUP)
        .start()
        .await
        .expect("the genesis starts and is ready");

    // Peers reach the genesis by its container name, which Docker's DNS resolves on `net`.
    let peer = |name: &str| {
        node(
            PeerlabNode::peer(format!("{genesis_host}:{PEER_PORT}")),
            name,
        )
        .with_network(&net)
        .with_label("peerlab.run", &run)
        .with_startup_timeout(STARTUP)
        .start()
    };
    let (peer1, peer2) = tokio::join!(peer("peer-1"), peer("peer-2"));
    let peers = [
        peer1.expect("peer-1 starts and joins"),
        peer2.expect("peer-2 starts and joins"),
    ];

    let mut clients = vec![client(&genesis).await];
    for p in &peers {
        clients.push(client(p).await);
    }

    // Ready means joined: `start()` returned only after `/ready` answered 200.
    for c in &clients[1..] {
        let status = c.status().await.expect("a ready peer answers");
        assert!(status.joined, "{} was ready before it joined", c.base());
        assert!(!status.genesis);
    }

    let deadline = Instant::now() + FORMED_WITHIN;
    let views: Vec<NodeStatus> = loop {
        let mut views = Vec::new();
        let mut last = String::new();
        for c in &clients {
            match c.status().await {
                Ok(s) => views.push(s),
                Err(e) => last = format!("{}: {e:#}", c.base()),
            }
        }
        if views.len() == clients.len() && views.iter().all(|s| s.members.len() == 3) {
            break views;
        }
        let counts: Vec<_> = views.iter().map(|s| s.members.len()).collect();
        assert!(
            Instant::now() < deadline,
            "the three nodes did not see each other within {FORMED_WITHIN:?}: member counts \
             {counts:?} {last}"
        );
        tokio::time::sleep(POLL).await;
    };

    assert!(views[0].genesis, "the first node started the network");
    let ids: BTreeSet<&str> = views.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "three distinct nodes");
    for view in &views {
        let members: BTreeSet<&str> = view.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(members, ids, "{:?} sees other members", view.name);
        let others = members.iter().filter(|m| **m != view.id).count();
        assert_eq!(others, 2, "{:?} sees 2 other members", view.name);
    }
    let names: BTreeSet<_> = views.iter().filter_map(|s| s.name.as_deref()).collect();
    assert_eq!(names, BTreeSet::from(["genesis", "peer-1", "peer-2"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genesis_and_two_peers_form_one_network_and_leave_nothing() {
    let docker = docker().await;
    let run = unique();
    let image = format!("peerlab-{run}");
    let reference = format!("{image}:{TAG}");
    peerlab::runtime::docker::image::build_image_from(
        &docker,
        &reference,
        Path::new(env!("CARGO_BIN_EXE_peerlab")),
        |_| {},
    )
    .await
    .expect("the node image builds from the test's peerlab binary");

    // In a task of its own so that a failing check still reaches the cleanup below.
    let outcome = tokio::spawn(genesis_and_two_peers(image, run.clone())).await;

    let options = RemoveImageOptionsBuilder::default().force(true).build();
    let removed = docker.remove_image(&reference, Some(options), None).await;
    let containers = containers_of(&docker, &run).await;
    let network = network_exists(&docker, &format!("peerlab-{run}")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    removed.expect("the test image is removed");
    assert!(
        containers.is_empty(),
        "testcontainers left containers: {containers:?}"
    );
    assert!(!network, "testcontainers left the network peerlab-{run}");
}

#[tokio::test]
async fn a_missing_image_is_refused_with_the_command_that_builds_it() {
    let missing = PeerlabNode::genesis().with_image(format!("peerlab-{}", unique()), TAG);
    let err = missing
        .require_local_image()
        .await
        .expect_err("no such image exists");
    let message = format!("{err:#}");
    assert!(message.contains(&missing.image_reference()), "{message}");
    assert!(message.contains("peerlab image build"), "{message}");
}
