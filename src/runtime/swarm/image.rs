//! The node image on every host of the swarm, without a registry.
//!
//! Swarm pulls a service's image on each node that runs a task; with no registry (or an
//! image that only exists locally) every node must already hold it. The runtime copies it
//! itself: `docker save` from the engine that has it (the local one, where `peerlab image
//! build` or the runtime put it) and `docker load` into the engine of every swarm host it
//! can reach, named by [`ENGINES_ENV`] (`h1=unix:///…,h2=tcp://…`; the swarm lab's
//! `SWARM_LAB_HOSTS`, space-separated, is read when it is unset). An engine that already
//! holds the same image id is skipped. Hosts it cannot reach must hold the image already
//! (`docker save IMAGE | docker -H HOST load`, or push it to a registry the hosts can pull
//! from and name it in the topology's `image:`); a task that finds no image fails with a
//! message saying so.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::ImportImageOptionsBuilder;
use futures::StreamExt;

use crate::runtime::RuntimeError;

/// `NAME=ENGINE,...`: the Docker engine of each swarm host, by the host's name (the value of
/// its `peerlab.host` node label, or its hostname).
pub const ENGINES_ENV: &str = "PEERLAB_SWARM_ENGINES";
/// The swarm lab's list of hosts (`h1=unix:///tmp/swarm-lab/d1.sock h2=...`), read when
/// [`ENGINES_ENV`] is unset.
pub const LAB_HOSTS_ENV: &str = "SWARM_LAB_HOSTS";

/// How long connecting to one engine may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One swarm host's engine.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The host's name (its `peerlab.host` label value or hostname).
    pub host: String,
    /// Where its engine answers (`unix:///…`, `tcp://…`).
    pub url: String,
    /// The connected client.
    pub docker: Docker,
}

/// `(host, url)` pairs of an engines list: `NAME=URL` items separated by commas or spaces.
pub fn parse_engines(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((host, url)) if !host.is_empty() && !url.is_empty() => {
                Ok((host.to_string(), url.to_string()))
            }
            _ => Err(format!(
                "`{item}` in {ENGINES_ENV}: expected HOST=ENGINE, e.g. \
                 h2=unix:///run/h2/docker.sock or h2=tcp://10.0.0.2:2375"
            )),
        })
        .collect()
}

/// The engines list of the environment: [`ENGINES_ENV`], else [`LAB_HOSTS_ENV`], else empty.
pub fn engines_text() -> String {
    match std::env::var(ENGINES_ENV) {
        Ok(t) if !t.trim().is_empty() => t,
        _ => std::env::var(LAB_HOSTS_ENV).unwrap_or_default(),
    }
}

/// The engines named by [`engines_text`], connected; none when it is empty.
pub async fn engines_from_env() -> Result<Vec<Engine>, RuntimeError> {
    let text = engines_text();
    let mut engines = Vec::new();
    for (host, url) in parse_engines(&text).map_err(RuntimeError::Failed)? {
        let docker = connect_to(&url).await.map_err(|e| {
            RuntimeError::Failed(format!(
                "the engine of swarm host {host} ({url}, from {ENGINES_ENV}) does not answer: \
                 {e}; fix or drop it from {ENGINES_ENV}"
            ))
        })?;
        engines.push(Engine { host, url, docker });
    }
    Ok(engines)
}

/// A client of the engine at `url`, version negotiated and pinged.
pub async fn connect_to(url: &str) -> Result<Docker, String> {
    let docker = if let Some(path) = url.strip_prefix("unix://") {
        Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if url.starts_with("tcp://") || url.starts_with("http://") {
        Docker::connect_with_http(url, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(format!(
            "`{url}` is not an engine address (unix:///path or tcp://host:port)"
        ));
    }
    .map_err(|e| e.to_string())?;
    let handshake = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, DockerError>(docker)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The image id `image` has on `docker`, `None` when it has no such image.
pub async fn image_id(docker: &Docker, image: &str) -> Result<Option<String>, RuntimeError> {
    match docker.inspect_image(image).await {
        Ok(found) => Ok(found.id),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(RuntimeError::Failed(format!(
            "cannot inspect image {image}: {e}"
        ))),
    }
}

/// Copies `image` from `source` into every engine of `targets` that does not hold the same
/// image id; returns the hosts it was loaded on.
pub async fn distribute(
    source: &Docker,
    image: &str,
    targets: &[(String, Docker)],
) -> Result<Vec<String>, RuntimeError> {
    let Some(id) = image_id(source, image).await? else {
        return Err(RuntimeError::Failed(format!(
            "image {image} is not on the engine peerlab copies it from; build it first \
             (`peerlab image build --tag {image}`) or load it on every swarm host yourself"
        )));
    };
    let mut loaded = Vec::new();
    for (host, target) in targets {
        if image_id(target, image).await?.as_deref() == Some(id.as_str()) {
            continue;
        }
        let tar = source.export_image(image);
        let mut progress = target.import_image_stream(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            tar,
            None,
        );
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| {
                RuntimeError::Failed(format!("cannot load image {image} on host {host}: {e}"))
            })?;
            if let Some(error) = step.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Failed(format!(
                    "cannot load image {image} on host {host}: {error}"
                )));
            }
        }
        if image_id(target, image).await?.as_deref() != Some(id.as_str()) {
            return Err(RuntimeError::Failed(format!(
                "loaded image {image} on host {host}, yet it does not hold it afterwards"
            )));
        }
        loaded.push(host.clone());
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_lists_read_commas_and_the_labs_spaces() {
        assert_eq!(
            parse_engines("h1=unix:///a.sock,h2=tcp://10.0.0.2:2375").unwrap(),
            vec![
                ("h1".to_string(), "unix:///a.sock".to_string()),
                ("h2".to_string(), "tcp://10.0.0.2:2375".to_string())
            ]
        );
        assert_eq!(
            parse_engines("h1=unix:///tmp/swarm-lab/d1.sock h2=unix:///tmp/swarm-lab/d2.sock")
                .unwrap()
                .len(),
            2
        );
        assert!(parse_engines("").unwrap().is_empty());
        assert!(parse_engines("h1").unwrap_err().contains("HOST=ENGINE"));
        assert!(parse_engines("=x").unwrap_err().contains("HOST=ENGINE"));
    }
}
