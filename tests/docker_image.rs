//! Building the node image through the Docker API. Requires a Docker engine: these tests
//! fail, not skip, without one, because CI runs them on machines that have one.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptionsBuilder;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:x}{:x}", std::process::id(), nanos)
}

async fn docker() -> Docker {
    peerlab::runtime::docker::image::connect()
        .await
        .unwrap_or_else(|e| panic!("this test needs Docker: {e}"))
}

async fn remove_image(docker: &Docker, tag: &str) {
    let options = RemoveImageOptionsBuilder::default().force(true).build();
    let _ = docker.remove_image(tag, Some(options), None).await;
}

/// Runs `body` with the engine and a fresh tag `<prefix>-<unique>:test`, then removes that
/// tag even when `body` panicked.
async fn with_tag<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Docker, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let docker = docker().await;
    let tag = format!("{}:test", unique(prefix));
    let outcome = tokio::spawn(body(docker.clone(), tag.clone())).await;
    remove_image(&docker, &tag).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn image_from_a_binary_has_the_dockerfile_settings() {
    with_tag("peerlab-image-test", |d, t| async move {
        let mut lines = Vec::new();
        let binary = Path::new(env!("CARGO_BIN_EXE_peerlab"));
        peerlab::runtime::docker::image::build_image_from(&d, &t, binary, |l| {
            lines.push(l.to_string())
        })
        .await
        .unwrap();
        assert!(!lines.is_empty(), "the builder reported no progress");
        let config = d.inspect_image(&t).await.unwrap().config.unwrap();
        assert_eq!(config.entrypoint.unwrap(), ["/peerlab", "node"]);
        assert_eq!(
            config.healthcheck.unwrap().test.unwrap(),
            ["CMD", "/peerlab", "health"]
        );
        let mut ports = config.exposed_ports.unwrap();
        ports.sort();
        assert_eq!(ports, ["7070/tcp", "7071/tcp"]);
        let labels = config.labels.unwrap();
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(labels["org.opencontainers.image.title"], "peerlab");
    })
    .await;
}

#[tokio::test]
async fn ensure_image_builds_a_missing_tag_once_and_never_pulls() {
    // No registry has this tag: a pull would fail, a local build succeeds.
    with_tag("peerlab-ensure-test", |d, t| async move {
        assert!(
            peerlab::runtime::docker::image::ensure_image(&d, &t)
                .await
                .unwrap(),
            "a missing tag is built"
        );
        assert!(
            !peerlab::runtime::docker::image::ensure_image(&d, &t)
                .await
                .unwrap(),
            "a current tag is kept"
        );
    })
    .await;
}

#[tokio::test]
async fn ensure_image_rebuilds_an_image_of_another_binary_and_drops_the_old_one() {
    with_tag("peerlab-stale-test", |d, t| async move {
        // The cargo-built `peerlab` is not this test executable: to ensure_image it is stale.
        let other = Path::new(env!("CARGO_BIN_EXE_peerlab"));
        peerlab::runtime::docker::image::build_image_from(&d, &t, other, |_| {})
            .await
            .unwrap();
        let stale = d.inspect_image(&t).await.unwrap().id.unwrap();
        assert!(
            peerlab::runtime::docker::image::ensure_image(&d, &t)
                .await
                .unwrap(),
            "a stale tag is rebuilt"
        );
        let fresh = d.inspect_image(&t).await.unwrap();
        assert_ne!(fresh.id.as_ref(), Some(&stale));
        assert!(
            d.inspect_image(&stale).await.is_err(),
            "the stale image is left dangling"
        );
        assert!(
            !peerlab::runtime::docker::image::ensure_image(&d, &t)
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_binary_fails_with_its_path_and_builds_nothing() {
    let docker = docker().await;
    let tag = format!("{}:test", unique("peerlab-missing-test"));
    let err = peerlab::runtime::docker::image::build_image_from(
        &docker,
        &tag,
        Path::new("/nonexistent/peerlab"),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent/peerlab"),
        "{err:#}"
    );
    assert!(docker.inspect_image(&tag).await.is_err());
}

#[tokio::test]
async fn image_build_again_leaves_no_dangling_image() {
    with_tag("peerlab-rebuild-test", |d, t| async move {
        let build = || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerlab"))
                .args(["image", "build", "--tag", &t])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        build();
        let first = d.inspect_image(&t).await.unwrap().id.unwrap();
        build();
        let second = d.inspect_image(&t).await.unwrap().id.unwrap();
        assert_ne!(first, second, "every build makes a new image");
        assert!(
            d.inspect_image(&first).await.is_err(),
            "the image the tag moved away from is removed"
        );
    })
    .await;
}
