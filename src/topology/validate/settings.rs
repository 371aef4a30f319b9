//! Node settings: built-in defaults, then `defaults`, then a group's `settings`, each value
//! checked where it is written.

use std::time::Duration;

use serde_saphyr::Location;

use crate::topology::diagnostic::Sink;
use crate::topology::file::{DurationText, SettingsFile, Spanned};
use crate::topology::model::{NodeSettings, duration_text};

use super::{duration, others};

/// A setting's value with the place it was written, to report conflicts where they arise.
#[derive(Clone)]
struct Set<T> {
    value: T,
    at: Location,
    path: String,
}

/// Settings written at one level (`defaults`, or a group's `settings`), durations parsed.
#[derive(Clone, Default)]
struct Layer {
    degree: Option<Set<u32>>,
    max_peers: Option<Set<u32>>,
    max_connections: Option<Set<usize>>,
    heartbeat_interval: Option<Set<Duration>>,
    heartbeat_timeout: Option<Set<Duration>>,
    suspect_timeout: Option<Set<Duration>>,
}

impl Layer {
    fn parse(s: &mut Sink, file: &SettingsFile, base: &str) -> Layer {
        fn plain<T: Copy>(v: &Option<Spanned<T>>, path: String) -> Option<Set<T>> {
            v.as_ref().map(|v| Set {
                value: v.value,
                at: v.at,
                path,
            })
        }
        let mut time = |v: &Option<Spanned<DurationText>>, key: &str| {
            let path = format!("{base}.{key}");
            let d = v.as_ref()?;
            let value = duration(s, d, &path)?;
            Some(Set {
                value,
                at: d.at,
                path,
            })
        };
        Layer {
            heartbeat_interval: time(&file.heartbeat_interval, "heartbeat_interval"),
            heartbeat_timeout: time(&file.heartbeat_timeout, "heartbeat_timeout"),
            suspect_timeout: time(&file.suspect_timeout, "suspect_timeout"),
            degree: plain(&file.degree, format!("{base}.degree")),
            max_peers: plain(&file.max_peers, format!("{base}.max_peers")),
            max_connections: plain(&file.max_connections, format!("{base}.max_connections")),
        }
    }

    /// `self` where set, else `under`.
    fn over(&self, under: &Layer) -> Layer {
        Layer {
            degree: self.degree.clone().or_else(|| under.degree.clone()),
            max_peers: self.max_peers.clone().or_else(|| under.max_peers.clone()),
            max_connections: self
                .max_connections
                .clone()
                .or_else(|| under.max_connections.clone()),
            heartbeat_interval: self
                .heartbeat_interval
                .clone()
                .or_else(|| under.heartbeat_interval.clone()),
            heartbeat_timeout: self
                .heartbeat_timeout
                .clone()
                .or_else(|| under.heartbeat_timeout.clone()),
            suspect_timeout: self
                .suspect_timeout
                .clone()
                .or_else(|| under.suspect_timeout.clone()),
        }
    }
}

/// Built-in defaults and the topology's `defaults`, under which each group's settings sit.
pub(super) struct Layers {
    defaults: Layer,
    /// Built-in settings; the degree is capped so small topologies work without settings.
    built_in: NodeSettings,
    total: usize,
}

impl Layers {
    pub(super) fn new(
        s: &mut Sink,
        defaults: Option<&Spanned<SettingsFile>>,
        total: usize,
    ) -> Layers {
        let mut built_in = NodeSettings::BUILT_IN;
        built_in.degree = built_in.degree.min(others(total) as u32).max(1);
        let layers = Layers {
            defaults: defaults
                .map_or_else(Layer::default, |d| Layer::parse(s, &d.value, "defaults")),
            built_in,
            total,
        };
        // Problems in `defaults` are reported once, at `defaults`, not once per group.
        layers.check(s, &layers.defaults, &layers.defaults);
        layers
    }

    /// Effective settings of a group whose own settings are `own` (at `base`).
    pub(super) fn resolve(
        &self,
        s: &mut Sink,
        own: Option<&Spanned<SettingsFile>>,
        base: &str,
    ) -> NodeSettings {
        let own = own.map_or_else(Layer::default, |o| Layer::parse(s, &o.value, base));
        let effective = own.over(&self.defaults);
        self.check(s, &own, &effective);
        let b = &self.built_in;
        NodeSettings {
            degree: effective.degree.map_or(b.degree, |v| v.value),
            max_peers: effective.max_peers.map_or(b.max_peers, |v| v.value),
            max_connections: effective
                .max_connections
                .map_or(b.max_connections, |v| v.value),
            heartbeat_interval: effective
                .heartbeat_interval
                .map_or(b.heartbeat_interval, |v| v.value),
            heartbeat_timeout: effective
                .heartbeat_timeout
                .map_or(b.heartbeat_timeout, |v| v.value),
            suspect_timeout: effective
                .suspect_timeout
                .map_or(b.suspect_timeout, |v| v.value),
        }
    }

    /// Reports problems involving at least one value written in `own`; `effective` is `own`
    /// over the defaults.
    fn check(&self, s: &mut Sink, own: &Layer, effective: &Layer) {
        let others = others(self.total);
        if let Some(degree) = &own.degree {
            if degree.value == 0 {
                s.report(
                    degree.at,
                    &degree.path,
                    "0 neighbours would leave the node alone; expected at least 1",
                );
            } else if degree.value as usize > others {
                s.report(
                    degree.at,
                    &degree.path,
                    format!(
                        "{} is more than the {others} other nodes; expected at most {others}",
                        degree.value
                    ),
                );
            }
        }
        if let Some(max_peers) = &own.max_peers
            && max_peers.value < 2
        {
            s.report(
                max_peers.at,
                &max_peers.path,
                format!(
                    "{} is too few links to take part in the overlay; expected at least 2",
                    max_peers.value
                ),
            );
        }
        let degree = effective
            .degree
            .as_ref()
            .map_or(self.built_in.degree, |d| d.value);
        let max_peers = effective
            .max_peers
            .as_ref()
            .map_or(self.built_in.max_peers, |m| m.value);
        if max_peers < degree {
            if let Some(m) = &own.max_peers {
                s.report(
                    m.at,
                    &m.path,
                    format!(
                        "{max_peers} is less than the degree {degree}; expected at least {degree}"
                    ),
                );
            } else if let Some(d) = &own.degree {
                s.report(
                    d.at,
                    &d.path,
                    format!(
                        "{degree} is more than max_peers ({max_peers}); expected at most {max_peers}, or raise max_peers"
                    ),
                );
            }
        }
        for d in [&own.heartbeat_interval, &own.suspect_timeout]
            .into_iter()
            .flatten()
        {
            if d.value.is_zero() {
                s.report(
                    d.at,
                    &d.path,
                    "0s is not a usable period; expected more than 0s",
                );
            }
        }
        let interval = effective
            .heartbeat_interval
            .as_ref()
            .map_or(self.built_in.heartbeat_interval, |v| v.value);
        let timeout = effective
            .heartbeat_timeout
            .as_ref()
            .map_or(self.built_in.heartbeat_timeout, |v| v.value);
        if timeout <= interval && !interval.is_zero() {
            let text = duration_text;
            if let Some(t) = &own.heartbeat_timeout {
                s.report(
                    t.at,
                    &t.path,
                    format!(
                        "{} would drop links between two heartbeats; expected more than the heartbeat_interval {}",
                        text(timeout),
                        text(interval)
                    ),
                );
            } else if let Some(i) = &own.heartbeat_interval {
                s.report(
                    i.at,
                    &i.path,
                    format!(
                        "{} is not shorter than the heartbeat_timeout {}; expected less than {}",
                        text(interval),
                        text(timeout),
                        text(timeout)
                    ),
                );
            }
        }
    }
}
