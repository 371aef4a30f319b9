//! The Swarm runtime's way into an overlay: TCP over `docker exec` into a relay container
//! (`peerlab::runtime::swarm::tunnel`). Tried here on a plain bridge network of the main
//! engine: the node's status socket is read only through the relay, never dialed directly.

use std::time::{Duration, Instant};

use bollard::Docker;
use peerlab::contract::NodeStatus;
use peerlab::runtime::swarm::tunnel::ExecTunnel;

use crate::support::docker::{docker, ensure_image, must, output, unique};

/// Removes the test's containers and network, also when it fails.
struct Cleanup {
    containers: Vec<String>,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = output(docker().args(["rm", "-f", c]));
        }
        let _ = output(docker().args(["network", "rm", &self.network]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_socket_is_read_through_an_exec_tunnel_into_a_relay() {
    ensure_image();
    let id = unique("tunnel");
    let node = format!("{id}-node");
    let relay = format!("{id}-relay");
    let cleanup = Cleanup {
        containers: vec![node.clone(), relay.clone()],
        network: id.clone(),
    };
    must(docker().args(["network", "create", "--label", "peerlab.test=tunnel", &id]));
    must(docker().args([
        "run",
        "-d",
        "--name",
        &node,
        "--network",
        &id,
        "--label",
        "peerlab.test=tunnel",
        "-e",
        &format!("PEERLAB_NAME={node}"),
        peerlab::DEFAULT_IMAGE,
    ]));
    must(docker().args([
        "run",
        "-d",
        "--name",
        &relay,
        "--network",
        &id,
        "--label",
        "peerlab.test=tunnel",
        "--no-healthcheck",
        "--entrypoint",
        "/peerlab",
        peerlab::DEFAULT_IMAGE,
        "relay",
    ]));

    let engine = Docker::connect_with_local_defaults().expect("a Docker engine");
    let tunnel = ExecTunnel::open(engine, relay.clone(), format!("{node}:7071"))
        .await
        .expect("a local listener");
    let url = format!("http://{}/status", tunnel.local_addr());
    // Eight requests at once are eight `docker exec`s: on a loaded two-core machine (the
    // Docker scenarios run beside this test) one took over 5 s to answer.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client");

    // The node needs a moment to listen: poll through the tunnel with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status: NodeStatus = loop {
        let answer = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<NodeStatus>().await.ok(),
            _ => None,
        };
        if let Some(status) = answer {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node's status never came through the tunnel at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.name.as_deref(), Some(node.as_str()));

    // Kept-alive and concurrent connections each get their own exec and all answer.
    let many = futures::future::join_all((0..8).map(|_| http.get(&url).send())).await;
    for answer in many {
        let answer = answer.expect("a request through the tunnel");
        assert!(answer.status().is_success());
        let again: NodeStatus = answer.json().await.expect("status JSON");
        assert_eq!(again.name.as_deref(), Some(node.as_str()));
    }

    // A target the relay cannot reach is a failed request, not a hang.
    let nowhere = ExecTunnel::open(
        Docker::connect_with_local_defaults().expect("a Docker engine"),
        relay.clone(),
        format!("{id}-missing:7071"),
    )
    .await
    .expect("a local listener");
    let failed = http
        .get(format!("http://{}/status", nowhere.local_addr()))
        .send()
        .await;
    assert!(failed.is_err(), "a request to nowhere answered: {failed:?}");
    drop(cleanup);
}
