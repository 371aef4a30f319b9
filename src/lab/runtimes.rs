//! Which runtime a lab runs on, where the local runtime finds the `peerlab` executable, and
//! the teardown of last resort that a dropped lab runs on a fresh thread.

use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use crate::runtime::docker::{DockerRuntime, NodeImage, is_peerlab_image};
use crate::runtime::kubernetes::{KubeOptions, KubernetesRuntime, PROBE_WITHIN};
use crate::runtime::local::LocalRuntime;
use crate::runtime::swarm::SwarmRuntime;
use crate::runtime::{Runtime, RuntimeError, TeardownReport};

use super::LabError;

/// Where a lab's nodes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Docker when an engine answers, local processes otherwise.
    Auto,
    /// Child processes of the `peerlab` executable, each on its own 127.x.y.z address with
    /// ports chosen by the kernel (port 0): runs never collide, no privileges needed.
    #[default]
    Local,
    /// Docker containers on user-defined networks (needs a Docker engine and the node image).
    Docker,
    /// Services of a Docker Swarm across its hosts, deployed through a manager
    /// (`DOCKER_HOST`, or the local engine when it is one); see `docs/multi-host.md`.
    Swarm,
    /// Pods of a Kubernetes cluster, a namespace per run, through the current kubeconfig or
    /// the one [`super::LabBuilder::kubernetes`] names; see `docs/kubernetes.md`.
    Kubernetes,
}

/// The runtime a lab ended up on (what `Auto` chose), with what a fresh connection to it
/// needs (the teardown of last resort makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chosen {
    Local,
    Docker,
    Swarm,
    Kubernetes(KubeOptions),
}

/// The environment variable naming the `peerlab` executable the local runtime starts nodes
/// from, when [`super::LabBuilder::node_binary`] does not.
pub const BIN_ENV: &str = "PEERLAB_BIN";

/// Where a Docker lab's node image comes from, as [`super::LabBuilder`] was told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageSource<'a> {
    /// The topology's image (or the one [`super::LabBuilder::image`] named).
    pub tag: &'a str,
    /// [`super::LabBuilder::image`] was called: use `tag` as it is, never build it.
    pub prebuilt: bool,
    /// [`super::LabBuilder::node_binary`], which the image is built from.
    pub binary: Option<&'a Path>,
}

impl ImageSource<'_> {
    /// How the Docker runtime gets the image, or the running executable when no image can be
    /// had: a `peerlab:*` image is built from a `peerlab` binary, and with neither a binary
    /// nor a prebuilt image given the only candidate is this program, which (a test binary,
    /// say) cannot run a node. `$PEERLAB_BIN` is not consulted, so that the CLI keeps
    /// building from itself whatever the environment says.
    fn node_image(&self) -> Result<NodeImage, PathBuf> {
        if self.prebuilt || !is_peerlab_image(self.tag) {
            return Ok(NodeImage::Prebuilt);
        }
        if let Some(binary) = self.binary {
            return Ok(NodeImage::Binary(binary.to_path_buf()));
        }
        match not_peerlab() {
            Some(exe) => Err(exe),
            None => Ok(NodeImage::RunningExecutable),
        }
    }
}

/// What a Kubernetes lab needs beyond the image: where the cluster is, and the nodes that
/// do not start with the run (`start: manual` groups), whose pods are created held.
#[derive(Debug, Clone, Default)]
pub(crate) struct KubeSetup {
    pub options: KubeOptions,
    pub held_at_start: BTreeSet<String>,
}

/// Connects the chosen runtime; `note` says what `Auto` chose and why.
pub(crate) async fn select(
    kind: RuntimeKind,
    image: ImageSource<'_>,
    kube: KubeSetup,
) -> Result<(Box<dyn Runtime>, Chosen, Option<String>), LabError> {
    let local = || -> Result<Box<dyn Runtime>, LabError> {
        Ok(Box::new(LocalRuntime::with_executable(node_binary(
            image.binary,
        )?)))
    };
    match kind {
        RuntimeKind::Local => Ok((local()?, Chosen::Local, None)),
        RuntimeKind::Swarm => {
            let node_image = image.node_image().map_err(|exe| {
                LabError::State(format!(
                    "the swarm runtime builds its node image {} from a peerlab binary, and \
                     this program is {} rather than peerlab: name the binary with \
                     LabBuilder::node_binary, or use an image built beforehand with \
                     LabBuilder::image(tag)",
                    image.tag,
                    exe.display()
                ))
            })?;
            Ok((
                Box::new(SwarmRuntime::connect().await?.with_node_image(node_image)),
                Chosen::Swarm,
                None,
            ))
        }
        RuntimeKind::Kubernetes => {
            let node_image = image.node_image().map_err(|exe| {
                LabError::State(format!(
                    "the kubernetes runtime builds its node image {} in the local Docker engine \
                     from a peerlab binary, and this program is {} rather than peerlab: name \
                     the binary with LabBuilder::node_binary, or use an image the cluster has \
                     with LabBuilder::image(tag)",
                    image.tag,
                    exe.display()
                ))
            })?;
            let runtime = KubernetesRuntime::connect(kube.options.clone())
                .await?
                .with_node_image(node_image)
                .with_held_at_start(kube.held_at_start);
            Ok((Box::new(runtime), Chosen::Kubernetes(kube.options), None))
        }
        RuntimeKind::Docker => {
            let node_image = image.node_image().map_err(|exe| {
                LabError::State(format!(
                    "the Docker runtime builds its node image {} from a peerlab binary, and \
                     this program is {} rather than peerlab: name the binary with \
                     LabBuilder::node_binary (in a cargo integration test, \
                     `.node_binary(env!(\"CARGO_BIN_EXE_peerlab\"))`), or use an image built \
                     beforehand with LabBuilder::image(tag) (`peerlab image build --tag TAG`); \
                     or run on local processes with RuntimeKind::Local",
                    image.tag,
                    exe.display()
                ))
            })?;
            Ok((
                Box::new(DockerRuntime::connect().await?.with_node_image(node_image)),
                Chosen::Docker,
                None,
            ))
        }
        RuntimeKind::Auto => {
            let Ok(node_image) = image.node_image() else {
                return Ok((
                    local()?,
                    Chosen::Local,
                    Some(
                        "runtime: local processes (auto: the Docker node image is built from a \
                         peerlab binary, and this program is not one; LabBuilder::node_binary \
                         or LabBuilder::image make Docker possible)"
                            .to_string(),
                    ),
                ));
            };
            match DockerRuntime::connect().await {
                Ok(docker) => Ok((
                    Box::new(docker.with_node_image(node_image)),
                    Chosen::Docker,
                    Some(
                        "runtime: docker (auto: an engine answered; --runtime local to use processes)"
                            .to_string(),
                    ),
                )),
                Err(_) => Ok((
                    local()?,
                    Chosen::Local,
                    Some("runtime: local processes (auto: no Docker engine answered)".to_string()),
                )),
            }
        }
    }
}

/// Every runtime that can have runs on this machine, for listing and removing runs
/// (`peerlab ps`, `peerlab down`): local processes always, Docker when an engine answers
/// (no engine simply means no Docker runs), the swarm when that engine is a swarm manager,
/// Kubernetes when a kubeconfig names a cluster that answers (see [`every_runtime_with`]).
pub async fn every_runtime() -> Vec<Box<dyn Runtime>> {
    every_runtime_with(&KubeOptions::default()).await
}

/// [`every_runtime`] with the cluster `kube` names. A cluster is asked only when a
/// kubeconfig exists, and counted absent when it does not answer within
/// [`PROBE_WITHIN`], so `peerlab ps` stays fast and quiet on a machine without one.
pub async fn every_runtime_with(kube: &KubeOptions) -> Vec<Box<dyn Runtime>> {
    // Listing and removing runs start nothing, so a missing executable path does not matter.
    let local =
        LocalRuntime::new().unwrap_or_else(|_| LocalRuntime::with_executable("peerlab".into()));
    let mut runtimes: Vec<Box<dyn Runtime>> = vec![Box::new(local)];
    // Swarm first: on a manager, `down` removes the services before the Docker runtime
    // looks at that engine's containers.
    if let Ok(swarm) = SwarmRuntime::connect().await {
        runtimes.push(Box::new(swarm));
    }
    if let Ok(docker) = DockerRuntime::connect().await {
        runtimes.push(Box::new(docker));
    }
    if kube.kubeconfig_exists() {
        match KubernetesRuntime::connect_within(kube.clone(), PROBE_WITHIN).await {
            Ok(kubernetes) => runtimes.push(Box::new(kubernetes)),
            // Said, not an error: a stale kubeconfig must not break `ps` of other runtimes.
            Err(e) => tracing::debug!("no Kubernetes runs listed: {e}"),
        }
    }
    runtimes
}

/// The running executable when it is not `peerlab` (a test binary, say): a Docker node
/// image built from it could not run a node.
fn not_peerlab() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (!is_peerlab(&exe)).then_some(exe)
}

fn is_peerlab(exe: &Path) -> bool {
    exe.file_stem().is_some_and(|s| s == "peerlab")
}

/// The `peerlab` executable local nodes run: the one given, else `$PEERLAB_BIN`, else this
/// very executable when it is `peerlab` (the CLI), else a `peerlab` next to it or one
/// directory up (cargo puts test and example binaries in `deps/` and `examples/` beside
/// the crate's binaries), else `peerlab` on the `PATH`.
pub fn node_binary(explicit: Option<&Path>) -> Result<PathBuf, LabError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok();
    if let Some(exe) = &exe {
        if is_peerlab(exe) {
            return Ok(exe.clone());
        }
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("peerlab");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("peerlab");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(LabError::State(format!(
        "cannot find the peerlab executable to start local nodes with: set {BIN_ENV}, call \
         LabBuilder::node_binary, or put peerlab on the PATH (`cargo install peerlab`); in \
         this repository's tests use env!(\"CARGO_BIN_EXE_peerlab\")"
    )))
}

/// Removes every process or container of `run_id` from a thread of its own with its own
/// tokio runtime and a fresh connection, so that it works whatever state the caller's
/// runtime is in (a panicking test, a runtime being shut down, a current-thread runtime
/// blocked in this very call).
pub(crate) fn remove_on_fresh_thread(
    chosen: Chosen,
    run_id: String,
    logs: PathBuf,
) -> Result<TeardownReport, String> {
    let work = move || -> Result<TeardownReport, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for the teardown: {e}"))?;
        rt.block_on(async move {
            // A fresh runtime of the same kind: removing a run by its id needs no state of
            // the lab's own (and the lab's Docker client belongs to the caller's runtime).
            let fresh: Result<Box<dyn Runtime>, RuntimeError> = match chosen {
                Chosen::Local => Ok(Box::new(LocalRuntime::with_executable("peerlab".into()))),
                Chosen::Docker => match DockerRuntime::connect().await {
                    Ok(docker) => Ok(Box::new(docker)),
                    Err(e) => Err(e),
                },
                Chosen::Swarm => match SwarmRuntime::connect().await {
                    Ok(swarm) => Ok(Box::new(swarm)),
                    Err(e) => Err(e),
                },
                Chosen::Kubernetes(options) => match KubernetesRuntime::connect(options).await {
                    Ok(kubernetes) => Ok(Box::new(kubernetes)),
                    Err(e) => Err(e),
                },
            };
            let fresh = fresh.map_err(|e| e.to_string())?;
            fresh
                .remove_run(Some(&run_id), Some(&logs))
                .await
                .map_err(|e| e.to_string())
        })
    };
    match std::thread::Builder::new()
        .name("peerlab-lab-teardown".into())
        .spawn(work)
    {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err("the teardown thread panicked".to_string())),
        Err(e) => Err(format!("cannot start the teardown thread: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source<'a>(tag: &'a str, prebuilt: bool, binary: Option<&'a Path>) -> ImageSource<'a> {
        ImageSource {
            tag,
            prebuilt,
            binary,
        }
    }

    #[test]
    fn the_node_image_comes_from_what_was_given_and_never_from_a_test_binary() {
        let bin = Path::new("/opt/peerlab");
        // A prebuilt tag wins over a binary: nothing is built.
        assert_eq!(
            source("peerlab:ci", true, Some(bin)).node_image(),
            Ok(NodeImage::Prebuilt)
        );
        // Another repository's image is never built, whatever the program.
        assert_eq!(
            source("example/node:1", false, None).node_image(),
            Ok(NodeImage::Prebuilt)
        );
        assert_eq!(
            source("peerlab:0.1.0", false, Some(bin)).node_image(),
            Ok(NodeImage::Binary(bin.to_path_buf()))
        );
        // This unit-test binary is not peerlab: without a binary or image, no image can be had.
        let refused = source("peerlab:0.1.0", false, None).node_image();
        assert_eq!(refused, Err(std::env::current_exe().expect("exe")));
    }
}
