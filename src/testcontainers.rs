//! The peerlab node image as a [testcontainers](https://docs.rs/testcontainers) [`Image`], for
//! projects that already write their integration tests with testcontainers (cargo feature
//! `testcontainers`).
//!
//! [`PeerlabNode::genesis`] starts a network, [`PeerlabNode::peer`] joins one through a
//! genesis address; every node setting of `peerlab node` is passed as its `PEERLAB_*`
//! environment variable. A container counts as started once `GET /ready` on its status
//! socket answers 200, that is once the node has **joined** (a genesis at once), so a test
//! can start the next peer, or query the node, as soon as `start()` returns.
//!
//! The image is never pulled: it must exist in the local engine. Build it with
//! `peerlab image build` (or from Rust with [`crate::runtime::docker::image::build_image`]); testcontainers
//! only pulls when the engine reports the image missing, and
//! [`PeerlabNode::require_local_image`] turns that case into an error that says how to build
//! it, instead of a pull of whatever image a registry holds under that name.
//!
//! ```no_run
//! use peerlab::client::StatusClient;
//! use peerlab::testcontainers::{PEER_PORT, PeerlabNode, status_url};
//! use std::time::{Duration, Instant};
//! use testcontainers::{ImageExt, runners::AsyncRunner};
//!
//! # async fn three_nodes_form_one_network() -> anyhow::Result<()> {
//! PeerlabNode::genesis().require_local_image().await?;
//! // Nodes find each other by container name on a user-defined network.
//! let genesis = PeerlabNode::genesis()
//!     .with_node_name("genesis")
//!     .with_container_name("genesis")
//!     .with_network("p2p")
//!     .start()
//!     .await?;
//! let peer = |name: &str| {
//!     PeerlabNode::peer(format!("genesis:{PEER_PORT}"))
//!         .with_node_name(name)
//!         .with_network("p2p")
//!         .start()
//! };
//! let (a, b) = tokio::join!(peer("peer-1"), peer("peer-2"));
//! let nodes = [genesis, a?, b?];
//!
//! // Joined is not formed yet: poll until every node sees all three, with a deadline.
//! let deadline = Instant::now() + Duration::from_secs(30);
//! for node in &nodes {
//!     let client = StatusClient::new(&status_url(node).await?, Duration::from_secs(2))?;
//!     while client.status().await?.members.len() < 3 {
//!         anyhow::ensure!(Instant::now() < deadline, "not formed in time");
//!         tokio::time::sleep(Duration::from_millis(200)).await;
//!     }
//! }
//! Ok(()) // dropping the containers removes them, and the network with the last one
//! # }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use ::testcontainers::core::wait::HttpWaitStrategy;
use ::testcontainers::core::{ContainerPort, WaitFor};
use ::testcontainers::{ContainerAsync, Image, TestcontainersError};
use anyhow::Context;
use bollard::errors::Error as DockerError;

/// Port of the peer protocol inside the container (what other nodes dial).
pub const PEER_PORT: u16 = 7070;
/// Port of the status socket inside the container (`/health`, `/ready`, `/status`, ...).
pub const STATUS_PORT: u16 = 7071;

/// Both ports, exposed so that testcontainers publishes them on ephemeral host ports.
const PORTS: [ContainerPort; 2] = [
    ContainerPort::Tcp(PEER_PORT),
    ContainerPort::Tcp(STATUS_PORT),
];

/// One peerlab node as a testcontainers image: the image reference, and the node's settings
/// as `PEERLAB_*` environment variables (see `peerlab node --help` for each one).
///
/// The default is a genesis node of the image `peerlab:<this crate's version>`.
#[derive(Debug, Clone)]
pub struct PeerlabNode {
    name: String,
    tag: String,
    env: BTreeMap<String, String>,
}

impl Default for PeerlabNode {
    fn default() -> Self {
        Self::genesis()
    }
}

impl PeerlabNode {
    /// A node that starts a network: it has no genesis to contact and is ready at once.
    pub fn genesis() -> Self {
        let (name, tag) = split_reference(crate::DEFAULT_IMAGE);
        PeerlabNode {
            name,
            tag,
            env: BTreeMap::new(),
        }
    }

    /// A node that joins the network through `genesis` (`HOST:PORT`, for example
    /// `genesis:7070` where `genesis` is the genesis container's name on a network both
    /// share). It is ready once it has joined.
    pub fn peer(genesis: impl Into<String>) -> Self {
        Self::genesis().with_setting("PEERLAB_GENESIS", genesis)
    }

    /// Another genesis address to join through when the ones before do not answer.
    pub fn with_fallback_genesis(mut self, genesis: impl Into<String>) -> Self {
        let genesis = genesis.into();
        let list = match self.env.remove("PEERLAB_GENESIS") {
            Some(list) if !list.is_empty() => format!("{list},{genesis}"),
            _ => genesis,
        };
        self.env.insert("PEERLAB_GENESIS".into(), list);
        self
    }

    /// Runs another image of the node, for example one a test built under its own tag.
    /// Use this rather than `ImageExt::with_name`/`with_tag` so that
    /// [`require_local_image`](Self::require_local_image) checks the image that runs.
    pub fn with_image(mut self, name: impl Into<String>, tag: impl Into<String>) -> Self {
        self.name = name.into();
        self.tag = tag.into();
        self
    }

    /// The node's name in status and logs (`PEERLAB_NAME`).
    pub fn with_node_name(self, name: impl Into<String>) -> Self {
        self.with_setting("PEERLAB_NAME", name)
    }

    /// Target number of neighbours (`PEERLAB_DEGREE`).
    pub fn with_degree(self, degree: u32) -> Self {
        self.with_setting("PEERLAB_DEGREE", degree.to_string())
    }

    /// Most links the node keeps (`PEERLAB_MAX_PEERS`).
    pub fn with_max_peers(self, max_peers: u32) -> Self {
        self.with_setting("PEERLAB_MAX_PEERS", max_peers.to_string())
    }

    /// Seed of the node's randomness, for reproducible peer choices (`PEERLAB_SEED`).
    pub fn with_seed(self, seed: u64) -> Self {
        self.with_setting("PEERLAB_SEED", seed.to_string())
    }

    /// The address other nodes dial to reach this one (`PEERLAB_ADVERTISE`). By default the
    /// node advertises its hostname, the container id, which Docker's DNS resolves on
    /// user-defined networks; set it when the container gets another hostname.
    pub fn with_advertise(self, addr: impl Into<String>) -> Self {
        self.with_setting("PEERLAB_ADVERTISE", addr)
    }

    /// How often each link is pinged (`PEERLAB_HEARTBEAT_INTERVAL`).
    pub fn with_heartbeat_interval(self, interval: Duration) -> Self {
        self.with_setting("PEERLAB_HEARTBEAT_INTERVAL", duration(interval))
    }

    /// Silence after which a neighbour is suspected (`PEERLAB_HEARTBEAT_TIMEOUT`).
    pub fn with_heartbeat_timeout(self, timeout: Duration) -> Self {
        self.with_setting("PEERLAB_HEARTBEAT_TIMEOUT", duration(timeout))
    }

    /// Time a suspect has before it is declared dead (`PEERLAB_SUSPECT_TIMEOUT`).
    pub fn with_suspect_timeout(self, timeout: Duration) -> Self {
        self.with_setting("PEERLAB_SUSPECT_TIMEOUT", duration(timeout))
    }

    /// Any other `PEERLAB_*` setting of `peerlab node`, for example
    /// `("PEERLAB_LOG_FORMAT", "json")`. Setting a variable again replaces it.
    pub fn with_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The settings passed to the container, by variable name.
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The image reference this node runs, `name:tag`.
    pub fn image_reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }

    /// Fails unless the image is present in the local engine, with the command that builds
    /// it. Call it before `start()`: for a missing image testcontainers would try to pull
    /// it, and no registry has peerlab's image (a registry may even hold someone else's
    /// image under the same name).
    pub async fn require_local_image(&self) -> anyhow::Result<()> {
        let docker = crate::runtime::docker::image::connect()
            .await
            .map_err(anyhow::Error::msg)?;
        let reference = self.image_reference();
        match docker.inspect_image(&reference).await {
            Ok(_) => Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => anyhow::bail!(
                "the image {reference} is not in the local Docker engine, and it is never \
                 pulled: build it with `peerlab image build --tag {reference}` (or from Rust \
                 with peerlab::runtime::docker::image::build_image)"
            ),
            Err(e) => Err(e).with_context(|| format!("cannot inspect the image {reference}")),
        }
    }
}

impl Image for PeerlabNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn tag(&self) -> &str {
        &self.tag
    }

    /// Ready when `GET /ready` on the status socket answers 200: the node has joined.
    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::http(
            HttpWaitStrategy::new("/ready")
                .with_port(ContainerPort::Tcp(STATUS_PORT))
                .with_expected_status_code(200u16),
        )]
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &PORTS
    }
}

/// The status socket of a started node as `http://HOST:PORT` on the test's side (the mapped
/// host port of 7071), for [`crate::client::StatusClient`] or any HTTP client.
pub async fn status_url(
    container: &ContainerAsync<PeerlabNode>,
) -> Result<String, TestcontainersError> {
    let host = container.get_host().await?;
    let port = container
        .get_host_port_ipv4(ContainerPort::Tcp(STATUS_PORT))
        .await?;
    Ok(format!("http://{host}:{port}"))
}

/// `name:tag` split at the tag's colon (a registry port before a `/` is part of the name).
fn split_reference(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}

/// A duration as the node's flags parse it (humantime), in whole milliseconds.
fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(node: &PeerlabNode) -> Vec<(String, String)> {
        node.env_vars()
            .into_iter()
            .map(|(k, v)| (k.into().into_owned(), v.into().into_owned()))
            .collect()
    }

    #[test]
    fn genesis_runs_this_version_with_no_genesis_address() {
        let node = PeerlabNode::genesis();
        assert_eq!(node.image_reference(), crate::DEFAULT_IMAGE);
        assert_eq!(node.name(), "peerlab");
        assert_eq!(node.tag(), env!("CARGO_PKG_VERSION"));
        assert!(env(&node).is_empty());
        assert_eq!(
            node.expose_ports(),
            [ContainerPort::Tcp(7070), ContainerPort::Tcp(7071)]
        );
        assert_eq!(node.ready_conditions().len(), 1);
        assert!(matches!(node.ready_conditions()[0], WaitFor::Http(_)));
    }

    #[test]
    fn settings_become_peerlab_variables_the_node_parses() {
        let node = PeerlabNode::peer("genesis:7070")
            .with_fallback_genesis("backup:7070")
            .with_node_name("peer-1")
            .with_degree(2)
            .with_max_peers(8)
            .with_seed(7)
            .with_advertise("peer-1:7070")
            .with_heartbeat_interval(Duration::from_millis(200))
            .with_heartbeat_timeout(Duration::from_secs(1))
            .with_suspect_timeout(Duration::from_secs(2))
            .with_setting("PEERLAB_LOG_FORMAT", "json");
        // Parse the variables as `peerlab node` would: each one must be the `env` of one of
        // its flags, and its value must parse there.
        let command = <crate::cli::Cli as clap::CommandFactory>::command();
        let node_command = command
            .find_subcommand("node")
            .expect("peerlab has a node command");
        let mut argv = vec!["peerlab".to_string(), "node".to_string()];
        for (key, value) in env(&node) {
            let flag = node_command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == key.as_str()))
                .and_then(|a| a.get_long())
                .unwrap_or_else(|| panic!("`peerlab node` reads no variable {key}"));
            argv.push(format!("--{flag}={value}"));
        }
        let parsed = <crate::cli::Cli as clap::Parser>::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("the node rejects {argv:?}: {e}"));
        let crate::cli::Command::Node(node_args) = parsed.command else {
            panic!("not the node command");
        };
        assert_eq!(node_args.genesis, ["genesis:7070", "backup:7070"]);
        assert_eq!(node_args.name.as_deref(), Some("peer-1"));
        assert_eq!(node_args.degree, 2);
        assert_eq!(node_args.max_peers, 8);
        assert_eq!(node_args.seed, Some(7));
        assert_eq!(node_args.advertise.as_deref(), Some("peer-1:7070"));
        assert_eq!(node_args.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(node_args.heartbeat_timeout, Duration::from_secs(1));
        assert_eq!(node_args.suspect_timeout, Duration::from_secs(2));
        assert_eq!(node_args.log_format, crate::node::args::LogFormat::Json);
    }

    #[test]
    fn another_image_is_split_at_the_tag() {
        let node = PeerlabNode::genesis().with_image("peerlab-test-1", "test");
        assert_eq!(node.image_reference(), "peerlab-test-1:test");
        assert_eq!(
            split_reference("registry:5000/peerlab"),
            ("registry:5000/peerlab".to_string(), "latest".to_string())
        );
        assert_eq!(
            split_reference("registry:5000/peerlab:1"),
            ("registry:5000/peerlab".to_string(), "1".to_string())
        );
    }
}
