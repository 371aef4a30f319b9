//! Hosts: the `hosts` and `links` sections, and where the genesis and each group are placed
//! (`host:`). Every name a link or a group gives must be a declared host, so a typo is
//! reported at its line instead of silently leaving nodes unshaped.

use std::time::Duration;

use crate::topology::diagnostic::Sink;
use crate::topology::file::{DurationText, HostFile, LinkFile, Ratio, Spanned};
use crate::topology::model::{Host, HostLink, HostLinks, Placement};
use crate::topology::timeline::ShapeView;

use super::scenario::parse_bandwidth;
use super::{check_name, duration};

/// The placement keyword of `host:`, so it cannot be a host's name.
pub(super) const SPREAD: &str = "spread";

pub(super) fn hosts(s: &mut Sink, file: Option<&Spanned<Vec<HostFile>>>) -> Vec<Host> {
    let Some(file) = file else {
        return Vec::new();
    };
    if file.value.is_empty() {
        s.report(
            file.at,
            "hosts",
            "is empty; expected at least one host such as `- name: eu`, or remove `hosts`",
        );
    }
    let mut out: Vec<Host> = Vec::new();
    for (i, host) in file.value.iter().enumerate() {
        let path = format!("hosts[{i}].name");
        let name = &host.name.value;
        check_name(s, &host.name, &path, "host name");
        let usable = name != SPREAD && !out.iter().any(|h| &h.name == name);
        if name == SPREAD {
            s.report(
                host.name.at,
                &path,
                "`spread` is the placement that spreads a group over every host; expected another host name",
            );
        } else if out.iter().any(|h| &h.name == name) {
            s.report(
                host.name.at,
                &path,
                format!("host `{name}` is declared twice; expected unique host names"),
            );
        }
        let label = host.label.as_ref().map(|l| {
            if l.value.trim().is_empty() {
                s.report(
                    l.at,
                    format!("hosts[{i}].label"),
                    "is empty; expected a swarm node label value or hostname, or remove `label` to use the host's name",
                );
            }
            l.value.trim().to_string()
        });
        if usable {
            out.push(Host {
                name: name.clone(),
                label,
            });
        }
    }
    out
}

pub(super) fn links(
    s: &mut Sink,
    file: Option<&Spanned<Vec<Spanned<LinkFile>>>>,
    hosts: &[Host],
    hosts_declared: bool,
) -> HostLinks {
    let mut out = HostLinks::default();
    let Some(file) = file else {
        return out;
    };
    if !hosts_declared {
        s.report(
            file.at,
            "links",
            "links join hosts, but no `hosts` are declared; add a `hosts` list, or remove `links`",
        );
        return out;
    }
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut seen_default = false;
    for (i, link) in file.value.iter().enumerate() {
        let path = format!("links[{i}]");
        // Hosts first, then the shape: diagnostics in the order of the file.
        let pair = link
            .value
            .between
            .as_ref()
            .and_then(|b| pair(s, b, &format!("{path}.between"), &names));
        let shape = shape(s, &link.value, &path);
        let default = link.value.default.as_ref();
        match (&link.value.between, default) {
            (Some(_), Some(d)) => s.report(
                d.at,
                format!("{path}.default"),
                "a link is either `between` two hosts or the `default`, not both; remove one",
            ),
            (None, None) => s.report(
                link.at,
                &path,
                "names no hosts; expected `between: [HOST, HOST]`, or `default: true` for every pair not listed",
            ),
            (None, Some(d)) if !d.value => s.report(
                d.at,
                format!("{path}.default"),
                "`default: false` means nothing; expected `default: true`, or `between: [HOST, HOST]`",
            ),
            (None, Some(d)) => {
                if seen_default {
                    s.report(
                        d.at,
                        format!("{path}.default"),
                        "a second default link; expected at most one `default: true` entry",
                    );
                }
                seen_default = true;
                out.default = shape;
            }
            (Some(between), None) => {
                if let Some(pair) = pair {
                    if out.pairs.iter().any(|l| l.joins(&pair[0], &pair[1])) {
                        s.report(
                            between.at,
                            format!("{path}.between"),
                            format!(
                                "the link between `{}` and `{}` is declared twice; expected one entry per pair (in either order)",
                                pair[0], pair[1]
                            ),
                        );
                    } else if let Some(shape) = shape {
                        out.pairs.push(HostLink {
                            between: pair,
                            shape,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The two distinct, declared hosts of a `between`.
fn pair(
    s: &mut Sink,
    between: &Spanned<Vec<Spanned<String>>>,
    path: &str,
    names: &[&str],
) -> Option<[String; 2]> {
    let [a, b] = between.value.as_slice() else {
        s.report(
            between.at,
            path,
            format!(
                "names {} host(s); expected exactly two, e.g. `between: [eu, us]`",
                between.value.len()
            ),
        );
        return None;
    };
    let mut known = true;
    for (k, host) in [a, b].into_iter().enumerate() {
        if !names.contains(&host.value.as_str()) {
            known = false;
            s.report(
                host.at,
                format!("{path}[{k}]"),
                format!(
                    "unknown host `{}`; expected one of: {}",
                    host.value,
                    names.join(", ")
                ),
            );
        }
    }
    if a.value == b.value {
        s.report(
            b.at,
            format!("{path}[1]"),
            format!(
                "a link from `{}` to itself; nodes on one host are not shaped, expected two different hosts",
                a.value
            ),
        );
        return None;
    }
    known.then(|| [a.value.clone(), b.value.clone()])
}

/// The link's shape; `None` when a value is unusable (already reported).
fn shape(s: &mut Sink, link: &LinkFile, path: &str) -> Option<ShapeView> {
    let mut ok = true;
    let mut time = |d: &Option<Spanned<DurationText>>, key: &str| {
        d.as_ref().map_or(Some(Duration::ZERO), |d| {
            let parsed = duration(s, d, &format!("{path}.{key}"));
            ok &= parsed.is_some();
            parsed
        })
    };
    let delay = time(&link.latency, "latency").unwrap_or_default();
    let jitter = time(&link.jitter, "jitter").unwrap_or_default();
    let loss = match &link.loss {
        Some(l) => match ratio(&l.value) {
            Ok(r) => r,
            Err(e) => {
                s.report(l.at, format!("{path}.loss"), e);
                ok = false;
                0.0
            }
        },
        None => 0.0,
    };
    let rate = match &link.bandwidth {
        Some(b) => match parse_bandwidth(&b.value) {
            Ok(r) => Some(r),
            Err(e) => {
                s.report(b.at, format!("{path}.bandwidth"), e);
                ok = false;
                None
            }
        },
        None => None,
    };
    ok.then_some(ShapeView {
        delay,
        jitter,
        loss,
        rate,
    })
}

/// `0.1%` or `0.001` as a ratio from 0 to 1.
fn ratio(value: &Ratio) -> Result<f64, String> {
    let (ratio, written) = match value {
        Ratio::Number(n) => (*n, n.to_string()),
        Ratio::Text(t) => {
            let number = t.trim().strip_suffix('%').map(str::trim);
            let parsed = number.and_then(|n| n.parse::<f64>().ok());
            match parsed {
                Some(p) => (p / 100.0, t.clone()),
                None => {
                    return Err(format!(
                        "`{t}` is not a loss; expected a percentage such as `0.1%`, or a ratio from 0 to 1"
                    ));
                }
            }
        }
    };
    if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!(
            "`{written}` is not a loss between none and all; expected 0% to 100% (or a ratio from 0 to 1)"
        ))
    }
}

/// Where the genesis or a group is placed: `None` without hosts; `spread` by default.
pub(super) fn placement(
    s: &mut Sink,
    host: Option<&Spanned<String>>,
    path: &str,
    hosts: &[Host],
    hosts_declared: bool,
) -> Option<Placement> {
    if !hosts_declared {
        if let Some(host) = host {
            s.report(
                host.at,
                path,
                format!(
                    "places the nodes on `{}`, but no `hosts` are declared; add a `hosts` list, or remove `host`",
                    host.value
                ),
            );
        }
        return None;
    }
    let Some(host) = host else {
        return Some(Placement::Spread);
    };
    let name = host.value.trim();
    if name == SPREAD {
        Some(Placement::Spread)
    } else if hosts.iter().any(|h| h.name == name) {
        Some(Placement::On(name.to_string()))
    } else {
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        s.report(
            host.at,
            path,
            format!(
                "unknown host `{name}`; expected one of: {}, or `spread`",
                names.join(", ")
            ),
        );
        Some(Placement::Spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_as_percentages_or_ratios() {
        assert_eq!(ratio(&Ratio::Text("0.1%".into())), Ok(0.001));
        assert_eq!(ratio(&Ratio::Text(" 5 %".into())), Ok(0.05));
        assert_eq!(ratio(&Ratio::Number(0.25)), Ok(0.25));
        assert_eq!(ratio(&Ratio::Number(0.0)), Ok(0.0));
        for bad in [
            Ratio::Text("150%".into()),
            Ratio::Text("-1%".into()),
            Ratio::Text("lots".into()),
            Ratio::Text("0.1".into()),
            Ratio::Number(5.0),
            Ratio::Number(-0.1),
        ] {
            let err = ratio(&bad).unwrap_err();
            assert!(err.contains("expected"), "{bad:?}: {err}");
        }
    }
}
