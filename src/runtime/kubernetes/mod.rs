//! The Kubernetes runtime: a run's nodes as the pods of StatefulSets in a namespace of
//! their own.
//!
//! - [`objects`]: the objects of a run (namespace, headless services, StatefulSets) built
//!   from its plan, without I/O; shared with `peerlab export kubernetes`.

pub mod objects;
