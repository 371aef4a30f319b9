//! Exports: a run plan written out for other tools to run, apart from the runtimes that run
//! plans themselves.
//!
//! - [`compose`]: a docker-compose file (`peerlab compose`).
//! - [`stack`]: a Docker Swarm stack file (`peerlab compose --stack`).
//! - [`kubernetes`]: Kubernetes objects (`peerlab export kubernetes`), the same the
//!   Kubernetes runtime creates.
//!
//! An exporter reads the plan types of [`crate::runtime`] (and what a container runtime and
//! an exporter share, [`crate::runtime::container`]); no runtime imports an exporter.

/// The nodes' admin token in an exported file: compose variable interpolation, so the file
/// holds no secret and `/admin/*` stays off unless `PEERLAB_ADMIN_TOKEN` is set in the
/// shell that deploys it (an empty value leaves the admin API off).
pub const ADMIN_TOKEN_INTERPOLATION: &str = "${PEERLAB_ADMIN_TOKEN:-}";

/// The header lines of a compose or stack file on turning link faults on.
const ADMIN_TOKEN_HEADER: &str = "\
# Link faults (/admin/*) are off unless PEERLAB_ADMIN_TOKEN is set (16+ characters) in the
# shell that deploys this file; the file holds no token. To turn them on:
#   export PEERLAB_ADMIN_TOKEN=\"$(openssl rand -hex 32)\"
# and send it with each admin request: Authorization: Bearer $PEERLAB_ADMIN_TOKEN
";

/// The nodes' network key in an exported file, when the topology asks for one: a required
/// compose variable, so the file holds no secret and `up`/`deploy` stops with this message
/// when the deploying shell has no key, instead of starting nodes that can never join. (No
/// `$` or `}` in the message: compose would read them as interpolation. No `-` either:
/// `docker stack deploy` (CLI 20.10 to 28 at least) looks for a `-` default before a `:?`
/// and, finding one in the message, deployed every node with the message's tail as its key.)
pub const NETWORK_KEY_INTERPOLATION: &str = "${PEERLAB_NETWORK_KEY:?set PEERLAB_NETWORK_KEY to one secret for every node, see this file's header}";

/// The header lines of a compose or stack file whose nodes need a network key.
const NETWORK_KEY_HEADER: &str = "\
# The topology sets network_key: every node must hold the same secret to speak the protocol.
# The file holds none; set it in the shell that deploys this file (keep it, and use the same
# one for every deploy of this network):
#   export PEERLAB_NETWORK_KEY=\"$(openssl rand -hex 32)\"
";

/// The header lines on the run's secrets: the admin token always, the network key when
/// the plan needs one.
fn secrets_header(plan: &crate::runtime::RunPlan) -> String {
    let network_key = if plan.network_key.is_some() {
        NETWORK_KEY_HEADER
    } else {
        ""
    };
    format!("{ADMIN_TOKEN_HEADER}{network_key}")
}

/// The environment entries of a node of an exported file that carry the run's secrets, as
/// interpolations of the deploying shell's variables: the admin token (optional), and the
/// network key (required) when the plan needs one.
fn secrets_env(plan: &crate::runtime::RunPlan) -> Vec<(String, String)> {
    let mut env = vec![(
        crate::contract::ADMIN_TOKEN_ENV.to_string(),
        ADMIN_TOKEN_INTERPOLATION.to_string(),
    )];
    if plan.network_key.is_some() {
        env.push((
            crate::contract::NETWORK_KEY_ENV.to_string(),
            NETWORK_KEY_INTERPOLATION.to_string(),
        ));
    }
    env
}

pub mod compose;
pub mod kubernetes;
pub mod stack;

#[cfg(test)]
mod tests {
    use super::NETWORK_KEY_INTERPOLATION;

    /// The message of `${VAR:?message}` must survive every interpolator that reads it:
    /// docker-compose 1.29, Compose v2 and `docker stack deploy`, which takes any `-` in it
    /// for a default value (and once started every node with part of the message as key).
    #[test]
    fn the_network_key_message_holds_nothing_an_interpolator_reads() {
        let message = NETWORK_KEY_INTERPOLATION
            .strip_prefix("${PEERLAB_NETWORK_KEY:?")
            .and_then(|m| m.strip_suffix('}'))
            .expect("a required-variable interpolation");
        for c in ['$', '{', '}', '-', ':', '?'] {
            assert!(!message.contains(c), "{c:?} in {message:?}");
        }
    }
}
