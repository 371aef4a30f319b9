//! Name resolution for dials, with a short cache.
//!
//! On Docker, peers are addressed by container name and every dial asks Docker's embedded DNS
//! server. With a hundred containers probing and linking, that server (inside dockerd) answers
//! late, dials time out in resolution, and a healthy network looks dead: joins fail, probes
//! fail, suspicions become deaths. Peer addresses change only when a container restarts, so
//! an answer is reused for a while, and forgotten as soon as a dial to it fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a resolved address is reused.
const TTL: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct Resolver {
    cache: Arc<Mutex<HashMap<String, (SocketAddr, Instant)>>>,
}

impl Resolver {
    /// `addr` as a socket address: parsed when it is one, else from the cache or DNS.
    pub async fn resolve(&self, addr: &str) -> std::io::Result<SocketAddr> {
        if let Ok(direct) = addr.parse::<SocketAddr>() {
            return Ok(direct);
        }
        if let Some(cached) = self.cached(addr) {
            return Ok(cached);
        }
        let found = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            )
        })?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(addr.to_string(), (found, Instant::now()));
        }
        Ok(found)
    }

    /// A dial to `addr` failed: resolve it afresh next time (the container may have moved).
    pub fn forget(&self, addr: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(addr);
        }
    }

    fn cached(&self, addr: &str) -> Option<SocketAddr> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(addr) {
            Some((found, at)) if at.elapsed() < TTL => Some(*found),
            Some(_) => {
                cache.remove(addr);
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_addresses_need_no_lookup_and_names_are_cached_until_forgotten() {
        let r = Resolver::default();
        let direct = r.resolve("127.0.0.1:7070").await.unwrap();
        assert_eq!(direct, "127.0.0.1:7070".parse().unwrap());
        assert!(
            r.cached("127.0.0.1:7070").is_none(),
            "literals are not cached"
        );

        let named = r.resolve("localhost:7070").await.unwrap();
        assert_eq!(named.port(), 7070);
        assert_eq!(r.cached("localhost:7070"), Some(named));
        r.forget("localhost:7070");
        assert!(r.cached("localhost:7070").is_none());

        assert!(r.resolve("no-such-host.invalid:1").await.is_err());
    }
}
