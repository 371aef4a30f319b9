//! Local networks for benchmarks, started and watched the way `peerlab run --runtime local`
//! does it (a [`LocalRuntime`] and a [`RunPlan`] from a topology), but driven step by step so
//! a bench can time what happens between steps.
//!
//! Whether the network "holds" is decided by the orchestrator's own checks
//! ([`evaluate_formation`]), so a bench measures exactly what a topology's `expect` would.
//! Every node process is gone after [`LocalNet::teardown`], and also when a bench panics:
//! the runtime kills its children when dropped and [`ProcessGuard`] kills whatever carries
//! the run's id.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerlab::client::StatusClient;
use peerlab::orchestrator::{FormationExpectation, NodeObservation, evaluate_formation, plan};
use peerlab::runtime::local::{LocalRuntime, scan_processes};
use peerlab::runtime::{NodeEndpoint, RunPlan, Runtime};
use peerlab::topology::{self, Topology};

/// The release (or test) build of `peerlab` that cargo built for this bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_peerlab");
/// Pause between two polling rounds of every watched status socket.
pub const POLL: Duration = Duration::from_millis(100);
/// How long one status request may take; only a paused node takes that long, and benches
/// do not poll paused nodes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Peers started at once: more only queues process start-ups on a small CPU.
const START_CONCURRENCY: usize = 32;

/// Parses a bench's topology and plans its run under `runs_dir`.
pub fn plan_from_yaml(yaml: &str, runs_dir: &Path, run_id: &str) -> (Topology, RunPlan) {
    let topology = topology::parse_str(yaml, &format!("{run_id}.yaml"))
        .unwrap_or_else(|e| panic!("the bench topology is invalid:\n{e}"));
    let plan = plan::build(&topology, topology.seed, run_id, runs_dir, false);
    (topology, plan)
}

/// Kills (SIGCONT, then SIGKILL) every process carrying the run's id when dropped, so a
/// panicking bench leaves nothing behind; after a clean teardown it finds nothing.
pub struct ProcessGuard {
    pub run_id: String,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        for p in scan_processes()
            .into_iter()
            .filter(|p| p.run_id == self.run_id)
        {
            let pid = Pid::from_raw(p.pid as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Pids of the run's live node processes (for memory and CPU readings).
pub fn run_pids(run_id: &str) -> Vec<u32> {
    scan_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .map(|p| p.pid)
        .collect()
}

/// A local network of one run; see the module docs.
pub struct LocalNet {
    pub runtime: LocalRuntime,
    pub plan: RunPlan,
    pub topology: Topology,
    /// Started nodes in plan order (genesis first).
    pub endpoints: Vec<NodeEndpoint>,
    http: reqwest::Client,
    _guard: ProcessGuard,
}

impl LocalNet {
    /// Plans and prepares the run; nothing is started yet.
    pub async fn prepare(yaml: &str, runs_dir: &Path, run_id: &str) -> LocalNet {
        let (topology, plan) = plan_from_yaml(yaml, runs_dir, run_id);
        let mut runtime = LocalRuntime::with_executable(BIN.into());
        runtime
            .check_support(&plan)
            .expect("the local runtime supports the bench topology");
        runtime.prepare(&plan).await.expect("prepare the run");
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(1)
            .build()
            .expect("an HTTP client");
        LocalNet {
            runtime,
            _guard: ProcessGuard {
                run_id: plan.run_id.clone(),
            },
            plan,
            topology,
            endpoints: Vec::new(),
            http,
        }
    }

    /// Starts every node of the plan: the genesis nodes one by one (the peers need their
    /// addresses), then the peers as fast as the runtime takes them.
    pub async fn start_all(&mut self) -> Result<(), String> {
        let runtime = &self.runtime;
        let (genesis, peers): (Vec<_>, Vec<_>) = self.plan.nodes.iter().partition(|n| n.genesis);
        for spec in genesis {
            let ep = runtime.start(spec).await.map_err(|e| e.to_string())?;
            self.endpoints.push(ep);
        }
        let started: Vec<_> = futures::stream::iter(peers)
            .map(|spec| runtime.start(spec))
            .buffered(START_CONCURRENCY)
            .collect()
            .await;
        for result in started {
            self.endpoints.push(result.map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    pub fn names(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.name.clone()).collect()
    }

    pub fn client(&self, name: &str) -> Option<StatusClient> {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| StatusClient::with_http(&e.status_url, self.http.clone()))
    }

    /// Asks every named node for `/status` at once. A node that does not answer is an
    /// observation without status (the orchestrator's checks then leave it out).
    pub async fn observe(&self, names: &[String]) -> Vec<NodeObservation> {
        let asks = names.iter().map(|name| async move {
            let Some(ep) = self.endpoints.iter().find(|e| &e.name == name) else {
                return NodeObservation {
                    name: name.clone(),
                    status_url: String::new(),
                    status: None,
                    error: Some("not started".into()),
                    ready_after: None,
                };
            };
            let answer = StatusClient::with_http(&ep.status_url, self.http.clone())
                .status()
                .await;
            let (status, error) = match answer {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            };
            NodeObservation {
                name: name.clone(),
                status_url: ep.status_url.clone(),
                status,
                error,
                ready_after: None,
            }
        });
        futures::future::join_all(asks).await
    }

    /// Polls the named nodes every [`POLL`] until `check` holds (returns `None`), and
    /// returns the time from `from` to the end of the first round that saw it hold (so the
    /// condition surely held by then), or the last problem once `within` has passed.
    pub async fn wait_until<F>(
        &self,
        names: &[String],
        from: Instant,
        within: Duration,
        mut check: F,
    ) -> Waited
    where
        F: FnMut(&[NodeObservation], Duration) -> Option<String>,
    {
        let mut rounds = 0;
        loop {
            let observations = self.observe(names).await;
            rounds += 1;
            let at = from.elapsed();
            let problem = check(&observations, at);
            if problem.is_none() || at >= within {
                return Waited {
                    after: problem.is_none().then_some(at),
                    problem,
                    observations,
                    rounds,
                };
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops every node, then proves from /proc that none of the run's processes is left.
    pub async fn teardown(mut self) -> Result<(), String> {
        let report = self.runtime.teardown().await.map_err(|e| e.to_string())?;
        let mut problems = report.leftovers;
        let left = run_pids(&self.plan.run_id);
        if !left.is_empty() {
            problems.push(format!(
                "{} node processes of {} still run: {left:?}",
                left.len(),
                self.plan.run_id
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// What [`LocalNet::wait_until`] saw.
pub struct Waited {
    /// From the fault to the round that saw the condition hold; `None`: it never did.
    pub after: Option<Duration>,
    /// Why the condition did not hold in the last round.
    pub problem: Option<String>,
    pub observations: Vec<NodeObservation>,
    pub rounds: usize,
}

/// Which conditions these observations fail for one overlay of exactly the observed nodes:
/// everyone answers and has joined, the overlay is connected, every degree is at least
/// `min_degree` and every member list equals the observed nodes' ids. Each failure is
/// (condition, why); empty when all of that holds.
pub fn overlay_failures(
    observations: &[NodeObservation],
    min_degree: usize,
) -> Vec<(String, String)> {
    let silent: Vec<&str> = observations
        .iter()
        .filter(|o| o.status.is_none())
        .map(|o| o.name.as_str())
        .collect();
    if !silent.is_empty() {
        let why = format!(
            "{} node(s) did not answer, e.g. {}",
            silent.len(),
            silent[0]
        );
        return vec![("answering".into(), why)];
    }
    let unjoined = observations
        .iter()
        .filter(|o| o.status.as_ref().is_some_and(|s| !s.joined))
        .count();
    if unjoined > 0 {
        return vec![(
            "joined".into(),
            format!("{unjoined} node(s) have not joined"),
        )];
    }
    let expect = FormationExpectation {
        all_ready: false,
        connected: true,
        min_degree: (min_degree > 0).then_some(min_degree),
        max_degree: None,
        full_membership: true,
        ..FormationExpectation::default()
    };
    evaluate_formation(observations, &expect)
        .into_iter()
        .filter(|c| !c.passed)
        .map(|c| {
            let why = c.message.unwrap_or(c.measured);
            (c.name, why)
        })
        .collect()
}

/// The first of [`overlay_failures`], as one line; `None` when the overlay holds.
pub fn overlay_problem(observations: &[NodeObservation], min_degree: usize) -> Option<String> {
    overlay_failures(observations, min_degree)
        .into_iter()
        .next()
        .map(|(name, why)| format!("{name}: {why}"))
}
