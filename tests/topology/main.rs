//! Everything that needs neither a process nor a container: topology files and their
//! scenarios validate (or are refused at the right line), the orchestrator's checks and
//! reports on synthetic networks, and compose files against the Compose Specification.

#[path = "../support/mod.rs"]
mod support;

mod checks;
mod compose;
mod hosts;
mod kubernetes_export;
mod limits;
mod network_key;
mod scenario;
mod validation;
