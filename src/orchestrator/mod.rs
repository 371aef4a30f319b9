//! Turns a topology into a run, checks what the nodes formed, and reports.
//!
//! [`plan`] builds the run plan a runtime starts. A [`Session`] holds one run's runtime
//! (through the [`crate::runtime::Runtime`] trait only, never a concrete runtime) and its
//! [`Observer`], the one poller of status sockets; [`run`] checks a session and
//! [`scenario`] plays faults through it; [`external`] checks a network peerlab did not
//! start, whose nodes [`discover`] finds. [`crate::lab`] is the public front door over all
//! of this. Everything else here is pure: it works on observations collected from status
//! sockets, so each check and report can be tested on synthetic networks without starting
//! a single node.

pub(crate) mod broadcast;
pub(crate) mod checks;
pub mod discover;
pub mod external;
pub(crate) mod graph;
pub(crate) mod junit;
pub(crate) mod layout;
mod membership;
pub(crate) mod model;
pub mod observer;
pub mod plan;
pub mod progress;
pub(crate) mod render;
pub(crate) mod report;
pub mod run;
pub mod scenario;
pub mod session;
pub(crate) mod summary;
mod text;

pub use broadcast::{BroadcastStats, DuplicateDelivery, MessageStats, evaluate_broadcast};
pub use checks::{evaluate_formation, formation_time};
pub use discover::{Discover, DiscoverError, Discovered, DnsNames, Endpoints, Found};
pub use external::{NetworkExpectation, check_network};
pub use graph::{DanglingLink, Edge, Overlay, OverlayNode, OverlaySummary};
pub use junit::{junit, write_junit};
pub use model::{
    BroadcastExpectation, CheckResult, FormationExpectation, InjectedBroadcast, NodeObservation,
};
pub use observer::{Detail, Formation, Observer, Waited};
pub use render::{RenderOptions, to_dot, to_dot_with, to_svg, to_svg_with};
pub use report::{NodeView, Report, RunMeta};
pub use session::Session;
pub use summary::summary_text;
