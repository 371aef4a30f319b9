//! Finding the status sockets of a network that peerlab did not start, for `peerlab check`
//! ([`super::external`]).
//!
//! A [`Discover`] is asked again and again while the checker waits, since the nodes of a
//! network that is still coming up appear one by one (swarm tasks get their DNS records as
//! they start). Two sources live here, both plain tokio: a fixed list of addresses
//! ([`Endpoints`]) and DNS names whose every address is a node ([`DnsNames`], e.g. Docker
//! Swarm's `tasks.<service>`). The compose-project source asks the Docker API, so it lives
//! with the lab, which may name a concrete runtime.

use std::collections::BTreeSet;
use std::net::IpAddr;

use async_trait::async_trait;

/// One status socket a discovery round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Base URL of the node's status socket, `http://HOST:PORT`.
    pub status_url: String,
    /// What the source calls the node (a container's name), used when the node reports no
    /// name of its own (`peerlab node --name`).
    pub hint: Option<String>,
}

/// What one discovery round found, and what it could not find (a name that did not
/// resolve yet), to show while waiting and in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Every status socket found, once each.
    pub found: Vec<Found>,
    /// Why part of the source found nothing this round.
    pub problems: Vec<String>,
}

/// Why a discovery failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoverError {
    /// The source is wrong (a compose project that has no container): nothing can be
    /// checked, and waiting will not help.
    #[error("{0}")]
    BadInput(String),
    /// The source cannot be asked (no Docker engine answers).
    #[error("{0}")]
    Failed(String),
}

/// A way to find a network's status sockets; see the module docs.
#[async_trait]
pub trait Discover: Send + Sync {
    /// The source in words, for progress lines and the report (`DNS tasks.peer, port 7071`).
    fn describe(&self) -> String;
    /// What to try when the source finds no node at all.
    fn advice(&self) -> String;
    /// The source always finds the same sockets (a list of addresses): the checker does
    /// not wait for more to appear.
    fn is_static(&self) -> bool {
        false
    }
    /// One round: every status socket the source knows of now.
    async fn discover(&self) -> Result<Discovered, DiscoverError>;
}

/// `HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/` as the base URL of a status
/// socket (`http://HOST:PORT`); an error says what is wrong with the text.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => {
            return Err(format!(
                "`{trimmed}`: the status socket speaks http, not {other}; write HOST:PORT or http://HOST:PORT"
            ));
        }
        None => ("http", trimmed),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!(
            "`{trimmed}`: give the status socket's address only (HOST:PORT), without a path"
        ));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!(
            "`{trimmed}` has no port; write HOST:PORT, e.g. 127.0.0.1:7071 (the node's --status)"
        ));
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{trimmed}` has no host; write HOST:PORT"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(format!("{scheme}://{host}:{p}")),
        _ => Err(format!(
            "`{trimmed}`: `{port}` is not a port (1-65535); write HOST:PORT"
        )),
    }
}

/// `HOST:PORT` of a status URL, the name of a node that reports none.
pub fn address_of(status_url: &str) -> &str {
    status_url
        .split_once("://")
        .map_or(status_url, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// A fixed list of status sockets (`peerlab check --endpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    urls: Vec<String>,
}

impl Endpoints {
    /// Parses every address (`HOST:PORT` or `http://HOST:PORT`; an item may hold several,
    /// separated by commas); duplicates count once. Errors name the address at fault.
    pub fn parse(list: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, String> {
        let mut urls: Vec<String> = Vec::new();
        for item in list {
            for part in item.as_ref().split(',').filter(|p| !p.trim().is_empty()) {
                let url = parse_endpoint(part)?;
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
        if urls.is_empty() {
            return Err(
                "no endpoint was given; write HOST:PORT of each node's status socket".into(),
            );
        }
        Ok(Endpoints { urls })
    }

    /// The status URLs, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }
}

#[async_trait]
impl Discover for Endpoints {
    fn describe(&self) -> String {
        let shown: Vec<&str> = self.urls.iter().take(3).map(|u| address_of(u)).collect();
        let more = self.urls.len().saturating_sub(shown.len());
        if more > 0 {
            format!("endpoints {} and {more} more", shown.join(", "))
        } else {
            format!("endpoints {}", shown.join(", "))
        }
    }

    fn advice(&self) -> String {
        "give the status socket (`peerlab node --status`) of every node".into()
    }

    fn is_static(&self) -> bool {
        true
    }

    async fn discover(&self) -> Result<Discovered, DiscoverError> {
        Ok(Discovered {
            found: self
                .urls
                .iter()
                .map(|u| Found {
                    status_url: u.clone(),
                    hint: None,
                })
                .collect(),
            problems: Vec::new(),
        })
    }
}

/// DNS names whose every address is a node, all serving their status socket on one port
/// (`peerlab check --dns tasks.peer --status-port 7071`). Resolved again every round, with
/// the system's resolver (`/etc/resolv.conf`, which is how it works inside a container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsNames {
    names: Vec<String>,
    port: u16,
}

impl DnsNames {
    /// The names (an item may hold several, separated by commas) and the status port every
    /// node listens on.
    pub fn new(
        names: impl IntoIterator<Item = impl AsRef<str>>,
        port: u16,
    ) -> Result<Self, String> {
        let mut list: Vec<String> = Vec::new();
        for item in names {
            for name in item
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                if name.contains(':') || name.contains('/') {
                    return Err(format!(
                        "`{name}` is not a DNS name; give the name alone and the port with --status-port"
                    ));
                }
                if !list.iter().any(|n| n == name) {
                    list.push(name.to_string());
                }
            }
        }
        if list.is_empty() {
            return Err("no DNS name was given".into());
        }
        if port == 0 {
            return Err("--status-port must be a port (1-65535)".into());
        }
        Ok(DnsNames { names: list, port })
    }
}

/// Addresses of one name as nodes: its IPv4 addresses (the A records), or its IPv6 ones
/// when it has no IPv4 address. `localhost` resolves to both 127.0.0.1 and ::1, one node.
fn node_addresses(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let all: BTreeSet<IpAddr> = addrs.into_iter().collect();
    let v4: Vec<IpAddr> = all.iter().copied().filter(IpAddr::is_ipv4).collect();
    if v4.is_empty() {
        all.into_iter().collect()
    } else {
        v4
    }
}

#[async_trait]
impl Discover for DnsNames {
    fn describe(&self) -> String {
        format!("DNS {} (status port {})", self.names.join(", "), self.port)
    }

    fn advice(&self) -> String {
        format!(
            "check that {} resolves from here (inside a swarm: run the check on the service's \
             overlay network, and use `tasks.<service>` with endpoint_mode dnsrr) and that the \
             nodes' status sockets listen on port {} of every address",
            self.names.join(", "),
            self.port
        )
    }

    async fn discover(&self) -> Result<Discovered, DiscoverError> {
        let lookups = self.names.iter().map(|name| async move {
            let answer = tokio::net::lookup_host((name.as_str(), self.port)).await;
            (name, answer)
        });
        let mut found: Vec<Found> = Vec::new();
        let mut problems = Vec::new();
        for (name, answer) in futures::future::join_all(lookups).await {
            match answer {
                Ok(addrs) => {
                    let ips = node_addresses(addrs.map(|a| a.ip()));
                    if ips.is_empty() {
                        problems.push(format!("{name} has no address"));
                    }
                    for ip in ips {
                        let host = match ip {
                            IpAddr::V4(v4) => v4.to_string(),
                            IpAddr::V6(v6) => format!("[{v6}]"),
                        };
                        let url = format!("http://{host}:{}", self.port);
                        if !found.iter().any(|f| f.status_url == url) {
                            found.push(Found {
                                status_url: url,
                                hint: None,
                            });
                        }
                    }
                }
                Err(e) => problems.push(format!("{name} did not resolve: {e}")),
            }
        }
        Ok(Discovered { found, problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_host_port_and_urls() {
        assert_eq!(
            parse_endpoint("127.0.0.1:7071"),
            Ok("http://127.0.0.1:7071".into())
        );
        assert_eq!(
            parse_endpoint(" http://node-3:9000/ "),
            Ok("http://node-3:9000".into())
        );
        assert_eq!(parse_endpoint("[::1]:80"), Ok("http://[::1]:80".into()));
        for bad in [
            "127.0.0.1",
            ":7071",
            "a:b",
            "a:0",
            "ftp://a:1",
            "a:1/status",
            "a:70000",
        ] {
            let e = parse_endpoint(bad).expect_err(bad);
            assert!(e.contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn endpoint_lists_split_commas_and_drop_duplicates() {
        let e = Endpoints::parse(["a:1,b:2", "a:1", " c:3 "]).expect("valid");
        assert_eq!(e.urls(), ["http://a:1", "http://b:2", "http://c:3"]);
        assert!(Endpoints::parse(Vec::<String>::new()).is_err());
        assert!(Endpoints::parse(["a:1,nope"]).is_err());
        assert_eq!(address_of("http://a:1"), "a:1");
    }

    #[test]
    fn dns_names_take_names_only() {
        assert!(DnsNames::new(["tasks.peer"], 7071).is_ok());
        assert!(DnsNames::new(["tasks.peer:7071"], 7071).is_err());
        assert!(DnsNames::new(["tasks.peer"], 0).is_err());
        assert!(DnsNames::new([""], 7071).is_err());
    }

    #[test]
    fn a_name_with_ipv4_addresses_is_its_ipv4_nodes() {
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::1".parse().expect("ip");
        assert_eq!(node_addresses([v6, v4, v4]), vec![v4]);
        assert_eq!(node_addresses([v6]), vec![v6]);
    }

    #[tokio::test]
    async fn localhost_resolves_to_one_node() {
        let dns = DnsNames::new(["localhost"], 7071).expect("valid");
        let found = dns.discover().await.expect("resolves");
        assert_eq!(found.found.len(), 1, "{found:?}");
        assert_eq!(found.found[0].status_url, "http://127.0.0.1:7071");
    }
}
