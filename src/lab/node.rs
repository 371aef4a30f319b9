//! A handle on one node of a lab: what its status socket says, and a way to broadcast.

use crate::client::StatusClient;
use crate::contract::AdminToken;
use crate::contract::admin::FaultsReport;
use crate::contract::{DeliveredMessage, NodeStatus};
use crate::runtime::NodeEndpoint;

use super::LabError;

/// One started node of a [`super::Lab`], reached through its status socket.
///
/// A handle is a snapshot of where the node was when [`super::Lab::node`] made it: after a
/// restart (a container may come back on another published port) ask the lab again.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    endpoint: NodeEndpoint,
    client: StatusClient,
    http: reqwest::Client,
    /// The run's admin token, for [`NodeHandle::faults`].
    admin_token: Option<AdminToken>,
}

impl NodeHandle {
    pub(crate) fn new(
        endpoint: NodeEndpoint,
        http: reqwest::Client,
        admin_token: Option<AdminToken>,
    ) -> Self {
        NodeHandle {
            client: StatusClient::with_http(&endpoint.status_url, http.clone()),
            endpoint,
            http,
            admin_token,
        }
    }

    /// The topology's name of the node (`genesis-0`, `peers-3`).
    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    /// Where the node is reached: its advertised peer address and status socket URL.
    pub fn endpoint(&self) -> &NodeEndpoint {
        &self.endpoint
    }

    /// Base URL of the status socket, e.g. `http://127.4.9.1:40211`.
    pub fn status_url(&self) -> &str {
        &self.endpoint.status_url
    }

    /// The address other nodes dial to reach this one.
    pub fn peer_addr(&self) -> &str {
        &self.endpoint.peer_addr
    }

    /// `GET /ready`: whether the node has joined the network.
    pub async fn ready(&self) -> Result<bool, LabError> {
        self.client.ready().await.map_err(|e| self.error(e))
    }

    /// `GET /status`: the node's whole view (neighbours, members, suspects, counters).
    pub async fn status(&self) -> Result<NodeStatus, LabError> {
        self.client.status().await.map_err(|e| self.error(e))
    }

    /// `GET /messages`: the broadcasts this node delivered, in delivery order.
    pub async fn messages(&self) -> Result<Vec<DeliveredMessage>, LabError> {
        self.client.messages().await.map_err(|e| self.error(e))
    }

    /// `GET /metrics`: the node's counters in Prometheus text format.
    pub async fn metrics(&self) -> Result<String, LabError> {
        let url = format!("{}/metrics", self.client.base());
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.error(e.into()))?;
        if !resp.status().is_success() {
            return Err(self.error(anyhow::anyhow!("{url} answered {}", resp.status())));
        }
        resp.text().await.map_err(|e| self.error(e.into()))
    }

    /// `GET /admin/faults`: the link faults in force on this node (blocks, and shapes by
    /// peer: a scenario's `shape`, or the links to other hosts of the topology's `hosts:`)
    /// and their counters.
    pub async fn faults(&self) -> Result<FaultsReport, LabError> {
        let url = format!("{}/admin/faults", self.client.base());
        let mut request = self.http.get(&url);
        if let Some(token) = &self.admin_token {
            request = request.header(reqwest::header::AUTHORIZATION, token.bearer());
        }
        let resp = request.send().await.map_err(|e| self.error(e.into()))?;
        if !resp.status().is_success() {
            return Err(self.error(anyhow::anyhow!("{url} answered {}", resp.status())));
        }
        resp.json().await.map_err(|e| self.error(e.into()))
    }

    /// `POST /broadcast`: floods `message` (with `title`) from this node; returns the id
    /// every node delivers it under (see [`NodeHandle::messages`]).
    pub async fn broadcast(&self, title: &str, message: &str) -> Result<String, LabError> {
        self.client
            .broadcast(title, message)
            .await
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: anyhow::Error) -> LabError {
        LabError::Node {
            node: self.endpoint.name.clone(),
            message: format!("{e:#}"),
        }
    }
}
