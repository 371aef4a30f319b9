//! A client of the status socket: `peerlab status`, `peerlab health`, and the orchestrator.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::contract::{BroadcastAccepted, BroadcastRequest, DeliveredMessage, NodeStatus};

/// Talks to one node's status socket.
#[derive(Debug, Clone)]
pub struct StatusClient {
    base: String,
    http: reqwest::Client,
}

/// Accepts `HOST:PORT` or a full `http://HOST:PORT` URL.
pub fn base_url(addr: &str) -> String {
    let trimmed = addr.trim_end_matches('/');
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    }
}

impl StatusClient {
    /// A client of the status socket at `addr` (`HOST:PORT` or a URL), giving up after `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(crate::contract::status::CLIENT_IDLE)
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Self::with_http(addr, http))
    }

    /// Shares one connection pool across many nodes (the orchestrator polls hundreds).
    pub fn with_http(addr: &str, http: reqwest::Client) -> Self {
        StatusClient {
            base: base_url(addr),
            http,
        }
    }

    /// Base URL of the node's status socket, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the node has joined (`/ready` answers 200).
    pub async fn ready(&self) -> anyhow::Result<bool> {
        let resp = self.http.get(format!("{}/ready", self.base)).send().await?;
        Ok(resp.status().is_success())
    }

    /// Whether the node's loop answers (`/live`), joined or not.
    pub async fn live(&self) -> anyhow::Result<()> {
        let resp = self.http.get(format!("{}/live", self.base)).send().await?;
        if !resp.status().is_success() {
            bail!("{} answered {}", self.base, resp.status());
        }
        Ok(())
    }

    /// The node's full view, member list included.
    pub async fn status(&self) -> anyhow::Result<NodeStatus> {
        self.status_at("status").await
    }

    /// The view without the member list (count and digest only): what polling asks for.
    pub async fn status_brief(&self) -> anyhow::Result<NodeStatus> {
        self.status_at("status?members=false").await
    }

    async fn status_at(&self, path: &str) -> anyhow::Result<NodeStatus> {
        let resp = self
            .http
            .get(format!("{}/{path}", self.base))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("{} answered {}", self.base, resp.status());
        }
        Ok(resp.json().await?)
    }

    /// The broadcasts the node delivered (`/messages`), to check how they spread.
    pub async fn messages(&self) -> anyhow::Result<Vec<DeliveredMessage>> {
        let resp = self
            .http
            .get(format!("{}/messages", self.base))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("{} answered {}", self.base, resp.status());
        }
        Ok(resp.json().await?)
    }

    /// Asks the node to broadcast a message; returns the broadcast id.
    pub async fn broadcast(&self, title: &str, message: &str) -> anyhow::Result<String> {
        let body = BroadcastRequest {
            title: title.to_string(),
            message: message.to_string(),
        };
        let resp = self
            .http
            .post(format!("{}/broadcast", self.base))
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("{} refused the broadcast: {}", self.base, resp.status());
        }
        let accepted: BroadcastAccepted = resp.json().await?;
        Ok(accepted.id)
    }
}

/// `peerlab status`: a readable view of one node.
pub fn render_status(s: &NodeStatus, messages: Option<&[DeliveredMessage]>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let name = s.name.as_deref().unwrap_or(&s.id);
    let role = if s.genesis { "genesis" } else { "peer" };
    let joined = if s.joined { "joined" } else { "NOT JOINED" };
    let _ = writeln!(
        out,
        "{name} ({role}, {joined})  id {}  addr {}  up {:.1}s",
        s.id, s.addr, s.uptime_secs
    );
    let _ = writeln!(
        out,
        "degree {} (target {})  members {}  suspects {}",
        s.neighbours.len(),
        s.target_degree,
        s.members.len(),
        s.suspects.len()
    );
    let c = &s.counters;
    let _ = writeln!(
        out,
        "delivered {}  duplicates dropped {}  frames in/out {}/{}  bytes in/out {}/{}  bad frames {}",
        c.delivered,
        c.duplicates_dropped,
        c.frames_in,
        c.frames_out,
        c.bytes_in,
        c.bytes_out,
        c.bad_frames
    );
    let neighbour_ids: std::collections::HashSet<&str> =
        s.neighbours.iter().map(|n| n.id.as_str()).collect();
    let width = s
        .members
        .iter()
        .map(|m| m.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let _ = writeln!(out, "\n  {:<width$}  {:<24}  link", "id", "address");
    for m in &s.members {
        let mark = if m.id == s.id {
            "self"
        } else if neighbour_ids.contains(m.id.as_str()) {
            "neighbour"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:<width$}  {:<24}  {mark}", m.id, m.addr);
    }
    for n in s
        .neighbours
        .iter()
        .filter(|n| !s.members.iter().any(|m| m.id == n.id))
    {
        let _ = writeln!(
            out,
            "  {:<width$}  {:<24}  neighbour (not a member)",
            n.id, n.addr
        );
    }
    if let Some(messages) = messages {
        let _ = writeln!(out, "\nlast broadcasts:");
        for m in messages.iter().rev().take(20) {
            let _ = writeln!(
                out,
                "  [{} via {} hops] {}: {}",
                m.origin, m.hops, m.title, m.message
            );
        }
    }
    out
}
