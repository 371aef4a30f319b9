//! Will the run fit? Checked before anything is created, so a run too big for the cluster
//! is refused with a sentence saying why and what to change, instead of leaving pods
//! `Pending` until the formation deadline.
//!
//! Two limits are read from the API: the pods each schedulable node still takes (its
//! allocatable `pods` minus the pods already on it) and the addresses of its pod subnet
//! (`spec.podCIDR`, when the cluster assigns one: a /24 holds 253 pods, whatever `maxPods`
//! says).
//!
//! The third is the API server's pace. The runtime creates one object per group, not per
//! node, and lists pods with one call for all of them; what grows with the network is the
//! observer, which reads every node's status socket through the API server's pod proxy, up
//! to [`POLL_CONCURRENCY`] at a time. [`api_pace`] times a few requests to the API server,
//! and [`paced`] refuses a run whose every observation round would take longer than
//! [`MAX_ROUND`] through it (the checks would judge a network seconds out of date), and a
//! server that already throttles this client (HTTP 429, API Priority and Fairness).

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, Client};

use std::time::{Duration, Instant};

use crate::contract::status::POLL_CONCURRENCY;
use crate::runtime::RuntimeError;

/// The longest observation round the checks accept: every node's status read once. The
/// scenario steps' deadlines are tens of seconds; a view older than this would make them
/// judge the past.
pub const MAX_ROUND: Duration = Duration::from_secs(10);

/// A proxied status read costs the API server more than the plain request [`api_pace`]
/// times: a second connection (to the kubelet or pod) and a larger body.
const PROXY_COST: u32 = 3;

/// Requests timed by [`api_pace`]; the median is taken, so one slow answer does not refuse a run.
const PACE_SAMPLES: usize = 5;

/// Room on one cluster node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoom {
    /// The node's name.
    pub name: String,
    /// Its allocatable `pods`.
    pub allocatable: u64,
    /// Pods bound to it that are not finished.
    pub used: u64,
    /// Addresses of its pod subnet a pod can get (network, gateway and broadcast excluded);
    /// `None` when the node has no `podCIDR` (the network plugin hands out addresses).
    pub addresses: Option<u64>,
    /// Pods on it that take an address of that subnet (not `hostNetwork`).
    pub addressed: u64,
}

impl NodeRoom {
    /// How many more pods this node takes.
    pub fn free(&self) -> u64 {
        let pods = self.allocatable.saturating_sub(self.used);
        match self.addresses {
            Some(total) => pods.min(total.saturating_sub(self.addressed)),
            None => pods,
        }
    }
}

/// Usable pod addresses of a pod subnet: all of it but the network and broadcast
/// addresses and the bridge's gateway.
pub fn usable_addresses(cidr: &str) -> Option<u64> {
    let net: IpNet = cidr.trim().parse().ok()?;
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(63);
    Some((1u64 << host_bits).saturating_sub(3))
}

/// Refuses `need` pods when the nodes cannot take them all; the error is the reason and
/// what to change.
pub fn fits(rooms: &[NodeRoom], need: usize) -> Result<(), String> {
    if rooms.is_empty() {
        return Err(
            "the cluster has no node that accepts pods (every node is cordoned or not Ready): \
             `kubectl get nodes`"
                .to_string(),
        );
    }
    let free: u64 = rooms.iter().map(NodeRoom::free).sum();
    if free >= need as u64 {
        return Ok(());
    }
    let detail: Vec<String> = rooms
        .iter()
        .map(|r| {
            let subnet = match r.addresses {
                Some(a) => format!(", pod subnet {a} addresses with {} taken", r.addressed),
                None => String::new(),
            };
            format!(
                "{}: {} of {} pods in use{subnet}",
                r.name, r.used, r.allocatable
            )
        })
        .collect();
    let subnet_bound = rooms.iter().any(|r| {
        r.addresses
            .is_some_and(|a| a.saturating_sub(r.addressed) < r.allocatable.saturating_sub(r.used))
    });
    let change = if subnet_bound {
        "the pod subnets are the limit: give the nodes larger podCIDRs (kube-controller-manager \
         --node-cidr-mask-size), add nodes, or run fewer nodes"
    } else {
        "raise the kubelet's maxPods, add nodes, remove other pods, or run fewer nodes"
    };
    Err(format!(
        "the run needs {need} pods and the cluster's schedulable nodes take {free} more ({}); \
         {change}",
        detail.join("; ")
    ))
}

/// The room on every node that accepts pods; `None` when the nodes or pods cannot be listed
/// (RBAC: listing nodes is a cluster-wide permission a namespaced user may lack), in which
/// case the run is not refused on a guess.
pub async fn rooms(client: &Client) -> Option<Vec<NodeRoom>> {
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!("cannot list the cluster's nodes, capacity not checked: {e}");
            return None;
        }
    };
    let pods = match Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!("cannot list the cluster's pods, capacity not checked: {e}");
            return None;
        }
    };
    let rooms = nodes
        .into_iter()
        .filter(schedulable)
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let allocatable = node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("pods"))
                .and_then(|q| q.0.parse::<u64>().ok())
                .unwrap_or(110);
            let addresses = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(usable_addresses);
            let on_node: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                .collect();
            let addressed = on_node
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.host_network) != Some(true))
                .count() as u64;
            Some(NodeRoom {
                name,
                allocatable,
                used: on_node.len() as u64,
                addresses,
                addressed,
            })
        })
        .collect();
    Some(rooms)
}

/// Ready and not cordoned; taints are not judged (the pods carry no tolerations, and a
/// tainted node then simply takes none of them: counted out too).
fn schedulable(node: &Node) -> bool {
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable) == Some(true) {
        return false;
    }
    let no_schedule = spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| {
        t.iter()
            .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
    });
    if no_schedule {
        return false;
    }
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Refuses a run of `need` pods that the cluster cannot take (see [`fits`]).
pub async fn check(client: &Client, need: usize) -> Result<(), RuntimeError> {
    let Some(rooms) = rooms(client).await else {
        return Ok(());
    };
    fits(&rooms, need).map_err(|reason| RuntimeError::Unsupported {
        runtime: super::NAME,
        reason,
    })
}

/// The API server's round trip: the median of a few `GET /version`, one after the other.
/// `Err` with a sentence when the server throttles this client (429) or does not answer.
pub async fn api_pace(client: &Client) -> Result<Duration, String> {
    let mut times = Vec::with_capacity(PACE_SAMPLES);
    for _ in 0..PACE_SAMPLES {
        let asked = Instant::now();
        match client.apiserver_version().await {
            Ok(_) => times.push(asked.elapsed()),
            Err(kube::Error::Api(status)) if status.code == 429 => {
                return Err(
                    "the API server is throttling this client already (HTTP 429 Too Many \
                     Requests): its API Priority and Fairness limits leave no room for a run's \
                     status polling; try again when the cluster is less busy, or raise the \
                     server's --max-requests-inflight"
                        .to_string(),
                );
            }
            Err(e) => return Err(format!("the API server did not answer `GET /version`: {e}")),
        }
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// How long one observation round of `nodes` status reads through the API server's pod
/// proxy takes at `round_trip` per request, [`POLL_CONCURRENCY`] in flight: refused over
/// [`MAX_ROUND`], with the measured figures and what to change.
pub fn paced(round_trip: Duration, nodes: usize) -> Result<Duration, String> {
    let waves = nodes.div_ceil(POLL_CONCURRENCY).max(1) as u32;
    let round = round_trip.saturating_mul(PROXY_COST).saturating_mul(waves);
    if round <= MAX_ROUND {
        return Ok(round);
    }
    Err(format!(
        "the API server answers in {:.0?}, so reading the status of {nodes} pods through its pod \
         proxy ({POLL_CONCURRENCY} at a time) would take about {:.1?} per round, longer than the \
         {:?} the checks allow: run fewer nodes, or use a cluster whose API server is closer or \
         less loaded",
        round_trip, round, MAX_ROUND
    ))
}

/// Refuses a run of `nodes` pods that the API server could not observe in time (see [`paced`]).
pub async fn check_pace(client: &Client, nodes: usize) -> Result<Duration, RuntimeError> {
    let refuse = |reason| RuntimeError::Unsupported {
        runtime: super::NAME,
        reason,
    };
    let round_trip = api_pace(client).await.map_err(refuse)?;
    let round = paced(round_trip, nodes).map_err(refuse)?;
    tracing::info!(
        ?round_trip,
        ?round,
        nodes,
        "API server pace: a status round through its pod proxy takes about {round:.1?}"
    );
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(allocatable: u64, used: u64, addresses: Option<u64>) -> NodeRoom {
        NodeRoom {
            name: "n1".into(),
            allocatable,
            used,
            addresses,
            addressed: used,
        }
    }

    #[test]
    fn pod_subnets_count_their_usable_addresses() {
        assert_eq!(usable_addresses("10.22.0.0/24"), Some(253));
        assert_eq!(usable_addresses("10.244.1.0/26"), Some(61));
        assert_eq!(usable_addresses("fd00::/120"), Some(253));
        assert_eq!(usable_addresses("nonsense"), None);
    }

    #[test]
    fn a_run_that_does_not_fit_is_refused_with_the_limit_to_change() {
        assert!(fits(&[room(110, 10, Some(253))], 100).is_ok());
        let pods = fits(&[room(110, 20, Some(253))], 100).expect_err("too many");
        assert!(pods.contains("needs 100 pods"), "{pods}");
        assert!(pods.contains("take 90 more"), "{pods}");
        assert!(pods.contains("maxPods"), "{pods}");
        // A /26 holds fewer pods than maxPods allows: the subnet is what to change.
        let subnet = fits(&[room(110, 10, Some(61))], 100).expect_err("subnet");
        assert!(subnet.contains("take 51 more"), "{subnet}");
        assert!(subnet.contains("podCIDR"), "{subnet}");
        // Two nodes add up; no subnet means the plugin decides.
        assert!(fits(&[room(110, 60, None), room(110, 60, None)], 100).is_ok());
        assert!(fits(&[], 1).expect_err("no node").contains("no node"));
    }

    #[test]
    fn a_run_the_api_server_cannot_observe_in_time_is_refused() {
        // A local API server (a few ms) observes thousands of pods well within a round.
        let round = paced(Duration::from_millis(3), 1000).expect("fast server");
        assert_eq!(round, Duration::from_millis(3 * 3 * 16));
        assert!(paced(Duration::from_millis(3), 0).is_ok());
        // A distant or loaded one (250 ms) cannot read 1,000 pods within the bound.
        let slow = paced(Duration::from_millis(250), 1000).expect_err("too slow");
        assert!(slow.contains("1000 pods"), "{slow}");
        assert!(slow.contains("12.0s"), "{slow}");
        assert!(slow.contains("run fewer nodes"), "{slow}");
        // ... but it can read 30.
        assert!(paced(Duration::from_millis(250), 30).is_ok());
    }
}
