//! Node settings: built-in defaults, then `defaults`, then a group's `settings`, each value
//! checked where it is written.

use std::time::Duration;

use serde_saphyr::Location;

use crate::topology::diagnostic::Sink;
use crate::topology::file::{DurationText, Quantity, SettingsFile, Spanned};
use crate::topology::model::{NodeSettings, Resources, duration_text};

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
    cpu_millis: Option<Set<u32>>,
    memory_bytes: Option<Set<u64>>,
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
        let resources = file.resources.as_ref().map(|r| &r.value);
        let mut quantity =
            |v: Option<(&Quantity, Location)>,
             key: &str,
             parse: fn(&Quantity) -> Result<u64, String>| {
                let path = format!("{base}.resources.{key}");
                let (value, at) = v?;
                match parse(value) {
                    Ok(value) => Some(Set { value, at, path }),
                    Err(message) => {
                        s.report(at, &path, message);
                        None
                    }
                }
            };
        let cpu_millis = quantity(
            resources
                .and_then(|r| r.cpu.as_ref())
                .map(|c| (&c.value.0, c.at)),
            "cpu",
            parse_cpu,
        )
        .map(|set| Set {
            // parse_cpu bounds it by MAX_CPU_MILLIS, well within u32.
            value: set.value as u32,
            at: set.at,
            path: set.path,
        });
        let memory_bytes = quantity(
            resources
                .and_then(|r| r.memory.as_ref())
                .map(|m| (&m.value.0, m.at)),
            "memory",
            parse_memory,
        );
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
            cpu_millis,
            memory_bytes,
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
            cpu_millis: self.cpu_millis.clone().or_else(|| under.cpu_millis.clone()),
            memory_bytes: self
                .memory_bytes
                .clone()
                .or_else(|| under.memory_bytes.clone()),
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
            resources: match (effective.cpu_millis, effective.memory_bytes) {
                (None, None) => None,
                (cpu, memory) => Some(Resources {
                    cpu_millis: cpu.map(|c| c.value),
                    memory_bytes: memory.map(|m| m.value),
                }),
            },
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

/// Least CPU a node may be given: Docker refuses less than a hundredth of a core.
const MIN_CPU_MILLIS: u64 = 10;
/// Most CPU a node may be given (a thousand cores), so the value fits every consumer.
const MAX_CPU_MILLIS: u64 = 1_000_000;
/// Least memory a node may be given: Docker refuses less than 6 MiB.
const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// Most memory a node may be given (a pebibyte), so the value fits every consumer
/// (Kubernetes quantities and Docker's byte counts are signed 64-bit).
const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// `resources.cpu` in thousandths of a core: a number of cores (`0.5`, `2`, at most three
/// decimals) or thousandths with `m` (`250m`), as Kubernetes writes CPU quantities.
pub(super) fn parse_cpu(value: &Quantity) -> Result<u64, String> {
    let expected =
        "expected cores as a number (`0.5`, `2`) or thousandths of a core with `m` (`250m`)";
    let millis = match value {
        Quantity::Number(n) => {
            let millis = n * 1000.0;
            if !n.is_finite() || *n < 0.0 || (millis - millis.round()).abs() > 1e-6 {
                return Err(format!(
                    "{n} is not a CPU amount; {expected}, with at most three decimals"
                ));
            }
            millis.round() as u64
        }
        Quantity::Text(text) => {
            let t = text.trim();
            let digits = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
            if let Some(m) = t.strip_suffix('m').filter(|m| digits(m)) {
                m.parse::<u64>()
                    .map_err(|_| format!("`{text}` is too large; {expected}"))?
            } else {
                let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
                if !digits(whole) || (t.contains('.') && !digits(fraction)) || fraction.len() > 3 {
                    return Err(format!("`{text}` is not a CPU amount; {expected}"));
                }
                let whole: u64 = whole
                    .parse()
                    .map_err(|_| format!("`{text}` is too large; {expected}"))?;
                let fraction: u64 = format!("{fraction:0<3}").parse().unwrap_or(0);
                whole.saturating_mul(1000).saturating_add(fraction)
            }
        }
    };
    if millis < MIN_CPU_MILLIS {
        return Err(format!(
            "{millis}m is less than the least CPU a container can be given; expected at least `{MIN_CPU_MILLIS}m` (0.01 cores)"
        ));
    }
    if millis > MAX_CPU_MILLIS {
        return Err(format!(
            "{millis}m is more than {} cores; expected a real CPU amount",
            MAX_CPU_MILLIS / 1000
        ));
    }
    Ok(millis)
}

/// `resources.memory` in bytes: bytes, or a whole number with a binary (`Ki`, `Mi`, `Gi`,
/// `Ti`) or decimal (`k`, `M`, `G`, `T`) unit, as Kubernetes writes memory quantities.
pub(super) fn parse_memory(value: &Quantity) -> Result<u64, String> {
    let expected = "expected bytes, or a whole number with `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024) or `k`, `M`, `G`, `T` (powers of 1000), such as `64Mi`";
    let bytes = match value {
        Quantity::Number(n) => {
            if !n.is_finite() || *n < 0.0 || n.fract() != 0.0 {
                return Err(format!("{n} is not a number of bytes; {expected}"));
            }
            *n as u64
        }
        Quantity::Text(text) => {
            let t = text.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (number, unit) = t.split_at(split);
            let size: u64 = match unit {
                "" => 1,
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                "Ti" => 1 << 40,
                "k" => 1_000,
                "M" => 1_000_000,
                "G" => 1_000_000_000,
                "T" => 1_000_000_000_000,
                "m" => {
                    return Err(format!(
                        "`{text}`: `m` means thousandths, not megabytes; write `{number}Mi` (mebibytes) or `{number}M` (megabytes)"
                    ));
                }
                other => {
                    let hint = match other.to_ascii_lowercase().as_str() {
                        "mb" | "mib" => {
                            format!("; for megabytes write `{number}Mi` (or `{number}M`)")
                        }
                        "gb" | "gib" | "g" => {
                            format!("; for gigabytes write `{number}Gi` (or `{number}G`)")
                        }
                        "kb" | "kib" | "k" => {
                            format!("; for kilobytes write `{number}Ki` (or `{number}k`)")
                        }
                        _ => String::new(),
                    };
                    return Err(format!("`{text}` is not a memory amount; {expected}{hint}"));
                }
            };
            if number.is_empty() {
                return Err(format!("`{text}` has no number; {expected}"));
            }
            number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(size))
                .ok_or_else(|| format!("`{text}` is too large; {expected}"))?
        }
    };
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!(
            "{bytes} bytes is more than a pebibyte; expected a real memory amount such as `64Mi`"
        ));
    }
    if bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "{bytes} bytes is less than the least memory a container can be given; expected at least `6Mi`"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Quantity {
        Quantity::Text(t.to_string())
    }

    #[test]
    fn cpu_amounts_as_cores_or_thousandths() {
        assert_eq!(parse_cpu(&text("250m")), Ok(250));
        assert_eq!(parse_cpu(&text(" 0.5 ")), Ok(500));
        assert_eq!(parse_cpu(&text("2")), Ok(2000));
        assert_eq!(parse_cpu(&text("1.25")), Ok(1250));
        assert_eq!(parse_cpu(&Quantity::Number(0.25)), Ok(250));
        assert_eq!(parse_cpu(&Quantity::Number(3.0)), Ok(3000));
        for bad in ["", "m", "0.5m", "1.2345", "two", "-1", "1e3", "250 m", ".5"] {
            let e = parse_cpu(&text(bad)).expect_err(bad);
            assert!(e.contains("expected"), "{bad}: {e}");
        }
        assert!(
            parse_cpu(&text("5m"))
                .unwrap_err()
                .contains("at least `10m`")
        );
        assert!(parse_cpu(&Quantity::Number(0.0001)).is_err());
        assert!(parse_cpu(&text("99999999999999999999m")).is_err());
    }

    #[test]
    fn memory_amounts_in_binary_or_decimal_units() {
        assert_eq!(parse_memory(&text("64Mi")), Ok(64 << 20));
        assert_eq!(parse_memory(&text("1Gi")), Ok(1 << 30));
        assert_eq!(parse_memory(&text("100M")), Ok(100_000_000));
        assert_eq!(parse_memory(&text("8388608")), Ok(8 << 20));
        assert_eq!(parse_memory(&Quantity::Number(8388608.0)), Ok(8 << 20));
        let milli = parse_memory(&text("64m")).unwrap_err();
        assert!(milli.contains("`64Mi`"), "{milli}");
        let mb = parse_memory(&text("64MB")).unwrap_err();
        assert!(mb.contains("`64Mi`"), "{mb}");
        for bad in ["", "Mi", "1.5Gi", "64 Mi", "lots", "64Pi"] {
            let e = parse_memory(&text(bad)).expect_err(bad);
            assert!(e.contains("expected") || e.contains("write"), "{bad}: {e}");
        }
        assert!(
            parse_memory(&text("1Mi"))
                .unwrap_err()
                .contains("at least `6Mi`")
        );
        assert!(
            parse_memory(&text("99999999999Ti"))
                .unwrap_err()
                .contains("too large")
        );
    }
}
