//! Partitions in the kernel for Docker containers: DROP rules in each container's own
//! network namespace, set from the host with `nsenter -t <pid> -n iptables-restore`.
//!
//! Every rule lives in one dedicated chain, [`CHAIN`], hooked first into `INPUT` and
//! `OUTPUT`, so that heal and teardown flush exactly what peerlab added and can prove it:
//! heal checks that the chain holds no rule, teardown that the chain and its hooks are gone.
//!
//! Rules sit on both sides of a cut. A node drops packets *from* the other sides' addresses
//! (inbound) and *to* them (outbound); with `one_way`, side 0 drops only its outbound packets
//! to the others and the others only their inbound packets from side 0. So a node that is
//! killed and started again (its namespace, and the rules in it, die with it; its address
//! may change) is still cut by the other side's rules, and [`Netfilter::reapply`] rebuilds
//! every chain from the partitions still in force once the runtime knows its new address.
//!
//! A paused container still has its process and namespace, so rules can be set and removed
//! while it is frozen; a stopped or killed one has neither and is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::runtime::RuntimeError;

/// The chain holding every rule peerlab adds to a container's network namespace.
pub const CHAIN: &str = "PEERLAB";
/// One `nsenter` + `iptables` call; a hung one must not hold a run forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Namespaces changed at once: each is a short-lived process pair on the host.
const CONCURRENCY: usize = 8;

/// A container's network namespace as netfilter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Topology node name.
    pub node: String,
    /// Host pid of the container's process; `None` when it is not running (no namespace).
    pub pid: Option<u32>,
    /// Its addresses on every network it is attached to (empty when not running).
    pub ips: Vec<IpAddr>,
}

/// One partition in force: node names per side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Node names per side.
    pub sides: Vec<Vec<String>>,
    /// Only the first side's traffic to the others is dropped.
    pub one_way: bool,
}

/// A DROP rule of [`CHAIN`], as iptables writes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Packets from this address (inbound).
    From(IpAddr),
    /// Packets to this address (outbound).
    To(IpAddr),
}

impl Rule {
    fn rule(&self) -> String {
        match self {
            Rule::From(ip) => format!("-A {CHAIN} -s {} -j DROP", host(ip)),
            Rule::To(ip) => format!("-A {CHAIN} -d {} -j DROP", host(ip)),
        }
    }
}

fn host(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The rules `node` needs for the cuts in force, given every node's current addresses.
/// Nodes without an address (not running) contribute none: their rules are added by
/// [`Netfilter::reapply`] once they run again.
pub fn rules_for(node: &str, cuts: &[Cut], ips: &BTreeMap<String, Vec<IpAddr>>) -> Vec<Rule> {
    let addresses = |names: &mut dyn Iterator<Item = &String>| -> Vec<IpAddr> {
        names
            .filter(|n| n.as_str() != node)
            .flat_map(|n| ips.get(n).into_iter().flatten().copied())
            .collect()
    };
    let mut rules = BTreeSet::new();
    for cut in cuts {
        let Some(mine) = cut.sides.iter().position(|s| s.iter().any(|n| n == node)) else {
            continue;
        };
        let others = |skip: usize| {
            let mut names = cut
                .sides
                .iter()
                .enumerate()
                .filter(move |(j, _)| *j != skip)
                .flat_map(|(_, s)| s.iter());
            addresses(&mut names)
        };
        if !cut.one_way {
            for ip in others(mine) {
                rules.insert(Rule::From(ip));
                rules.insert(Rule::To(ip));
            }
        } else if mine == 0 {
            rules.extend(others(0).into_iter().map(Rule::To));
        } else {
            let mut first = cut.sides[0].iter();
            rules.extend(addresses(&mut first).into_iter().map(Rule::From));
        }
    }
    rules.into_iter().collect()
}

/// `iptables-restore --noflush` input that empties [`CHAIN`] (creating it when missing),
/// hooks it first into INPUT and OUTPUT when `hook`, and fills it with `rules`.
pub fn restore_script(rules: &[Rule], hook: bool) -> String {
    let mut s = format!("*filter\n:{CHAIN} - [0:0]\n");
    if hook {
        s.push_str(&format!("-I INPUT 1 -j {CHAIN}\n-I OUTPUT 1 -j {CHAIN}\n"));
    }
    for r in rules {
        s.push_str(&r.rule());
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

/// `iptables-restore --noflush` input that unhooks and deletes [`CHAIN`].
pub fn removal_script() -> String {
    format!(
        "*filter\n:{CHAIN} - [0:0]\n-D INPUT -j {CHAIN}\n-D OUTPUT -j {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
    )
}

/// Rules of [`CHAIN`] in `iptables-save` output.
pub fn rules_in(save: &str) -> Vec<&str> {
    let prefix = format!("-A {CHAIN} ");
    save.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// Whether `iptables-save` output mentions [`CHAIN`] at all (the chain or a jump to it).
pub fn mentions_chain(save: &str) -> bool {
    save.lines().any(|l| {
        l.split_whitespace()
            .any(|w| w.trim_start_matches(':') == CHAIN)
    })
}

/// Namespaces holding our chain: node name to the pid whose namespace it is in.
#[derive(Debug, Default)]
struct State {
    cuts: Vec<Cut>,
    hooked: BTreeMap<String, u32>,
}

/// Partitions as iptables rules in the containers' namespaces; see the module docs.
#[derive(Debug, Default)]
pub struct Netfilter {
    state: Mutex<State>,
}

impl Netfilter {
    /// Can the host enter this running container's namespace and read its filter table?
    /// Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), `nsenter` and `iptables` on the host.
    pub async fn probe(&self, ns: &Netns) -> Result<(), String> {
        let pid = ns
            .pid
            .ok_or_else(|| format!("{} is not running", ns.node))?;
        iptables(pid, "iptables-save", &["-t", "filter"], None)
            .await
            .map(|_| ())
    }

    /// Whether any partition is in force (and so a node that starts needs rules).
    pub async fn holds(&self) -> bool {
        !self.state.lock().await.cuts.is_empty()
    }

    /// Adds a partition and rewrites the chain of every running container it concerns.
    pub async fn partition(&self, nets: &[Netns], cut: Cut) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().await;
        state.cuts.push(cut);
        apply(&mut state, nets).await
    }

    /// Rebuilds every chain from the partitions in force, for addresses that changed (a
    /// container started again) or namespaces that are new.
    pub async fn reapply(&self, nets: &[Netns]) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().await;
        if state.cuts.is_empty() {
            return Ok(());
        }
        apply(&mut state, nets).await
    }

    /// Ends every partition: flushes each chain and checks that none holds a rule.
    pub async fn heal(&self, nets: &[Netns]) -> Result<(), RuntimeError> {
        let mut state = self.state.lock().await;
        state.cuts.clear();
        forget_dead(&mut state, nets);
        let targets: Vec<(String, u32)> = state.hooked.clone().into_iter().collect();
        let script = restore_script(&[], false);
        let results = for_each(targets, |node, pid| {
            let script = script.clone();
            async move {
                iptables(pid, "iptables-restore", &["-w", "--noflush"], Some(&script))
                    .await
                    .map_err(|e| format!("{node}: {e}"))?;
                let save = iptables(pid, "iptables-save", &["-t", "filter"], None)
                    .await
                    .map_err(|e| format!("{node}: {e}"))?;
                match rules_in(&save).as_slice() {
                    [] => Ok(()),
                    left => Err(format!("{node}: chain {CHAIN} still holds {left:?}")),
                }
            }
        })
        .await;
        done("could not heal the partition", errors(results))
    }

    /// Removes the chain and its hooks from every namespace that still exists and verifies
    /// that the filter table no longer mentions it. Returns how many namespaces were cleaned
    /// and what could not be.
    pub async fn teardown(&self, nets: &[Netns]) -> (usize, Vec<String>) {
        let mut state = self.state.lock().await;
        state.cuts.clear();
        forget_dead(&mut state, nets);
        let targets: Vec<(String, u32)> = std::mem::take(&mut state.hooked).into_iter().collect();
        let count = targets.len();
        let script = removal_script();
        let results = for_each(targets, |node, pid| {
            let script = script.clone();
            async move {
                let removed =
                    iptables(pid, "iptables-restore", &["-w", "--noflush"], Some(&script)).await;
                let save = iptables(pid, "iptables-save", &["-t", "filter"], None)
                    .await
                    .map_err(|e| format!("{node}: cannot verify chain {CHAIN} is gone: {e}"))?;
                if mentions_chain(&save) {
                    return Err(format!(
                        "{node}: iptables chain {CHAIN} left in its network namespace{}",
                        removed.err().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                }
                Ok(())
            }
        })
        .await;
        let problems = errors(results);
        (count - problems.len(), problems)
    }
}

/// Drops bookkeeping of namespaces that are gone (container stopped, or started again with
/// a new process and namespace): their rules died with them.
fn forget_dead(state: &mut State, nets: &[Netns]) {
    state
        .hooked
        .retain(|node, pid| nets.iter().any(|n| &n.node == node && n.pid == Some(*pid)));
}

async fn apply(state: &mut State, nets: &[Netns]) -> Result<(), RuntimeError> {
    forget_dead(state, nets);
    let ips: BTreeMap<String, Vec<IpAddr>> = nets
        .iter()
        .map(|n| (n.node.clone(), n.ips.clone()))
        .collect();
    let mut scripts = BTreeMap::new();
    let mut targets = Vec::new();
    for ns in nets {
        let Some(pid) = ns.pid else { continue };
        let rules = rules_for(&ns.node, &state.cuts, &ips);
        let hooked = state.hooked.get(&ns.node) == Some(&pid);
        if rules.is_empty() && !hooked {
            continue;
        }
        scripts.insert(ns.node.clone(), restore_script(&rules, !hooked));
        targets.push((ns.node.clone(), pid));
    }
    let results = for_each(targets, |node, pid| {
        let script = scripts.get(&node).cloned().unwrap_or_default();
        async move {
            iptables(pid, "iptables-restore", &["-w", "--noflush"], Some(&script))
                .await
                .map(|_| ())
                .map_err(|e| format!("{node}: {e}"))
        }
    })
    .await;
    let mut problems = Vec::new();
    for (node, pid, result) in results {
        match result {
            // Hooked only once it worked, so a retry hooks the chain again.
            Ok(()) => {
                state.hooked.insert(node, pid);
            }
            Err(e) => problems.push(e),
        }
    }
    done("could not set the partition's iptables rules", problems)
}

/// Runs `job` for every (node, pid), a few at a time; returns each outcome.
async fn for_each<F, Fut>(
    targets: Vec<(String, u32)>,
    job: F,
) -> Vec<(String, u32, Result<(), String>)>
where
    F: Fn(String, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    futures::stream::iter(targets)
        .map(|(node, pid)| {
            let run = job(node.clone(), pid);
            async move { (node, pid, run.await) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// The errors among [`for_each`]'s outcomes.
fn errors(results: Vec<(String, u32, Result<(), String>)>) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|(_, _, r)| r.err())
        .collect()
}

fn done(what: &str, problems: Vec<String>) -> Result<(), RuntimeError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Failed(format!(
            "{what}: {}",
            problems.join("; ")
        )))
    }
}

/// `nsenter -t PID -n TOOL ARGS` with `input` on stdin; its stdout, or why it failed.
async fn iptables(
    pid: u32,
    tool: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t")
        .arg(pid.to_string())
        .arg("-n")
        .arg(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("nsenter -t {pid} -n {tool} {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{what}`: {e} (is util-linux nsenter installed?)"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("`{what}`: cannot write its input: {e}"))?;
    }
    let output = tokio::time::timeout(CALL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("`{what}` did not finish within {CALL_TIMEOUT:?}"))?
        .map_err(|e| format!("`{what}`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 9, 0, last])
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn addresses() -> BTreeMap<String, Vec<IpAddr>> {
        BTreeMap::from([
            ("a".to_string(), vec![ip(1)]),
            ("b".to_string(), vec![ip(2), ip(12)]),
            ("c".to_string(), vec![ip(3)]),
            // Not running: no address yet.
            ("d".to_string(), vec![]),
        ])
    }

    fn cut(one_way: bool) -> Cut {
        Cut {
            sides: vec![names(&["a"]), names(&["b", "c", "d"])],
            one_way,
        }
    }

    #[test]
    fn a_two_way_cut_drops_both_directions_on_both_sides() {
        let a = rules_for("a", &[cut(false)], &addresses());
        assert_eq!(
            a,
            vec![
                Rule::From(ip(2)),
                Rule::From(ip(3)),
                Rule::From(ip(12)),
                Rule::To(ip(2)),
                Rule::To(ip(3)),
                Rule::To(ip(12)),
            ]
        );
        let b = rules_for("b", &[cut(false)], &addresses());
        assert_eq!(b, vec![Rule::From(ip(1)), Rule::To(ip(1))]);
        // A node on no side of the cut keeps every link.
        assert!(rules_for("e", &[cut(false)], &addresses()).is_empty());
    }

    #[test]
    fn a_one_way_cut_drops_only_traffic_from_the_first_side() {
        assert_eq!(
            rules_for("a", &[cut(true)], &addresses()),
            vec![Rule::To(ip(2)), Rule::To(ip(3)), Rule::To(ip(12))]
        );
        assert_eq!(
            rules_for("c", &[cut(true)], &addresses()),
            vec![Rule::From(ip(1))]
        );
    }

    #[test]
    fn cuts_add_up_without_duplicates() {
        let again = Cut {
            sides: vec![names(&["c"]), names(&["a"])],
            one_way: false,
        };
        let rules = rules_for("a", &[cut(false), again], &addresses());
        assert_eq!(rules.len(), 6, "{rules:?}");
    }

    #[test]
    fn scripts_touch_only_the_peerlab_chain() {
        let script = restore_script(&[Rule::From(ip(2)), Rule::To(ip(2))], true);
        assert_eq!(
            script,
            "*filter\n:PEERLAB - [0:0]\n-I INPUT 1 -j PEERLAB\n-I OUTPUT 1 -j PEERLAB\n\
             -A PEERLAB -s 10.9.0.2/32 -j DROP\n-A PEERLAB -d 10.9.0.2/32 -j DROP\nCOMMIT\n"
        );
        assert_eq!(
            restore_script(&[], false),
            "*filter\n:PEERLAB - [0:0]\nCOMMIT\n"
        );
        assert!(removal_script().contains("-X PEERLAB\n"));
    }

    #[test]
    fn saved_tables_are_read_for_rules_and_leftovers() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:PEERLAB - [0:0]\n-A INPUT -j PEERLAB\n-A PEERLAB -s 10.9.0.2/32 -j DROP\nCOMMIT\n";
        assert_eq!(rules_in(save), vec!["-A PEERLAB -s 10.9.0.2/32 -j DROP"]);
        assert!(mentions_chain(save));
        let clean = "*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(rules_in(clean).is_empty());
        assert!(!mentions_chain(clean));
        assert!(!mentions_chain("-A INPUT -j PEERLAB2\n"));
    }
}
