//! The node's container image, built from the running executable through the Docker API.
//!
//! peerlab is one static binary, so the image is that binary on `scratch`. Building it
//! from `current_exe()` means a user with only the `peerlab` executable and a Docker
//! engine (no cargo, no registry) can run Docker topologies, and the containers always run
//! exactly the code of the orchestrator that starts them. Nothing is ever pulled: these
//! machines have no registry, and a missing tag must never silently fetch someone else's
//! `peerlab` image.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The top-level Dockerfile, reused so both build paths produce the same image.
const DOCKERFILE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"));
/// The `COPY` line of the top-level Dockerfile (binary from the cargo target directory).
const CARGO_COPY: &str = "COPY target/x86_64-unknown-linux-gnu/release/peerlab /peerlab";
/// Its replacement in the generated context, where the binary sits at the root.
const CONTEXT_COPY: &str = "COPY peerlab /peerlab";

/// Image label holding the SHA-256 of the binary an image was built from, so a stale
/// image is rebuilt rather than run.
pub const BINARY_LABEL: &str = "peerlab.binary.sha256";

/// How long `connect` waits for an engine before saying none answers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Dockerfile used for builds from the running executable: the top-level one with the
/// binary copied from the root of the build context.
pub fn context_dockerfile() -> String {
    DOCKERFILE.replace(CARGO_COPY, CONTEXT_COPY)
}

/// Connect to the Docker engine (`DOCKER_HOST` or the local socket), agree on an API
/// version (engines as old as 20.10 reject newer clients) and ping it.
///
/// The error is a full sentence meant for the user: what failed and what to do.
pub async fn connect() -> Result<Docker, String> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    handshake(&host, Docker::connect_with_defaults()).await
}

/// Version negotiation and ping of a client for `host`, with the user-facing error.
async fn handshake(host: &str, docker: Result<Docker, DockerError>) -> Result<Docker, String> {
    let hint = |detail: String| {
        format!(
            "no Docker engine answered at {host} ({detail}). Start Docker (for example \
             `sudo systemctl start docker`), make sure your user may use it (the `docker` \
             group), or set DOCKER_HOST; or run without Docker with `--runtime local`."
        )
    };
    let docker = docker.map_err(|e| hint(e.to_string()))?;
    let handshake = async {
        let docker = docker.negotiate_version().await?;
        docker.ping().await?;
        Ok::<_, DockerError>(docker)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(hint(e.to_string())),
        Err(_) => Err(hint(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Build `tag` from the running executable; `progress` receives the builder's output lines.
/// The image the tag named before is removed when nothing else uses it.
pub async fn build_image(
    docker: &Docker,
    tag: &str,
    progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the running peerlab executable")?;
    let previous = match docker.inspect_image(tag).await {
        Ok(image) => image.id,
        Err(_) => None,
    };
    build_image_from(docker, tag, &exe, progress).await?;
    drop_replaced(docker, previous).await;
    Ok(())
}

/// Removes an image a build has just moved its tag away from. Only succeeds when nothing
/// else uses or names it, so a rebuild leaves no dangling image behind and breaks nothing.
async fn drop_replaced(docker: &Docker, previous: Option<String>) {
    if let Some(old) = previous {
        let _ = docker
            .remove_image(&old, None::<RemoveImageOptions>, None)
            .await;
    }
}

/// Build `tag` from the given static `peerlab` binary (tests use the cargo-built one).
pub async fn build_image_from(
    docker: &Docker,
    tag: &str,
    binary: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let (context, digest) = build_context(binary)?;
    let labels = HashMap::from([(BINARY_LABEL, digest.as_str())]);
    let mut build_args = HashMap::new();
    let source = env!("CARGO_PKG_REPOSITORY");
    if !source.is_empty() {
        build_args.insert("SOURCE_URL", source);
    }
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        // No layer cache: cached layers are shared parents, and removing one image (a stale
        // tag, another test's image) deletes the parent a concurrent build of the same binary
        // is about to extend ("unknown parent image ID"). The binary changes every build
        // anyway, so the cache saves nothing.
        .nocache(true)
        .rm(true)
        .forcerm(true)
        .buildargs(&build_args)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("building image {tag} failed"))?;
        if let Some(detail) = info.error_detail {
            bail!(
                "building image {tag} failed: {}",
                detail
                    .message
                    .unwrap_or_else(|| "no reason given by the engine".into())
            );
        }
        for text in [info.stream, info.status].into_iter().flatten() {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                progress(line);
            }
        }
    }
    // The classic builder reports some failures only as a missing result.
    docker
        .inspect_image(tag)
        .await
        .with_context(|| format!("the engine finished building {tag} but has no such image"))?;
    Ok(())
}

/// Make sure `tag` exists locally and holds the running executable, building it if it is
/// missing or was built from another binary (a stale image would run old node code against
/// a newer orchestrator). Never pulls. Returns whether a build happened.
pub async fn ensure_image(docker: &Docker, tag: &str) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find the running peerlab executable")?;
    ensure_image_from(docker, tag, &exe).await
}

/// [`ensure_image`] from the given static `peerlab` binary rather than the running
/// executable: what a program that is not `peerlab` (a test binary, which passes
/// `env!("CARGO_BIN_EXE_peerlab")`) needs, since its own executable cannot run a node.
pub async fn ensure_image_from(docker: &Docker, tag: &str, exe: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(exe)
        .with_context(|| format!("cannot read the peerlab binary {}", exe.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let stale = match docker.inspect_image(tag).await {
        Ok(image) => {
            let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
            if labels.get(BINARY_LABEL) == Some(&digest) {
                return Ok(false);
            }
            image.id
        }
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect image {tag}")),
    };
    build_image_from(
        docker,
        tag,
        exe,
        |line| tracing::debug!(target: "peerlab::runtime::docker::image", "{line}"),
    )
    .await?;
    drop_replaced(docker, stale).await;
    Ok(true)
}

/// A tar build context holding the generated Dockerfile and the binary (mode 0755), and
/// the binary's SHA-256 (hex).
fn build_context(binary: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(binary)
        .with_context(|| format!("cannot read the peerlab binary {}", binary.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let dockerfile = context_dockerfile();
    let mut tar = tar::Builder::new(Vec::new());
    append(&mut tar, "Dockerfile", 0o644, dockerfile.as_bytes())?;
    append(&mut tar, "peerlab", 0o755, &bytes)?;
    Ok((tar.into_inner()?, digest))
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    tar.append_data(&mut header, path, data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_dockerfile_differs_only_in_the_copy_line() {
        assert!(
            DOCKERFILE.contains(CARGO_COPY),
            "top-level Dockerfile lost its COPY line"
        );
        let generated = context_dockerfile();
        assert!(generated.contains(CONTEXT_COPY));
        assert!(!generated.contains(CARGO_COPY));
        assert_eq!(generated.replace(CONTEXT_COPY, CARGO_COPY), DOCKERFILE);
    }

    #[test]
    fn dockerfile_labels_this_version_and_probes_in_exec_form() {
        let version = format!(
            "org.opencontainers.image.version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            DOCKERFILE.contains(&version),
            "bump the version label in Dockerfile"
        );
        assert!(DOCKERFILE.contains("CMD [\"/peerlab\", \"health\"]"));
        assert!(DOCKERFILE.contains("ENTRYPOINT [\"/peerlab\", \"node\"]"));
        let directive = |l: &str| l.replace(' ', "").to_lowercase().starts_with("#syntax=");
        assert!(
            !DOCKERFILE.lines().any(directive),
            "a syntax line makes BuildKit pull"
        );
    }

    #[test]
    fn context_holds_the_dockerfile_and_an_executable_binary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("peerlab");
        std::fs::write(&bin, b"\x7fELF fake").unwrap();
        let (bytes, digest) = build_context(&bin).unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(b"\x7fELF fake")));
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            seen.push((
                path,
                entry.header().mode().unwrap(),
                entry.header().size().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (
                    "Dockerfile".to_string(),
                    0o644,
                    context_dockerfile().len() as u64
                ),
                ("peerlab".to_string(), 0o755, 9),
            ]
        );
    }

    #[tokio::test]
    async fn no_engine_gives_advice() {
        let socket = "/nonexistent/docker.sock";
        let client = Docker::connect_with_unix(socket, 5, bollard::API_DEFAULT_VERSION);
        let err = handshake(socket, client).await.unwrap_err();
        assert!(err.contains(socket), "{err}");
        assert!(err.contains("--runtime local"), "{err}");
    }

    #[test]
    fn missing_binary_names_the_path() {
        let err = build_context(Path::new("/nonexistent/peerlab")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/peerlab"), "{err}");
    }
}
