//! `network_key:` of a topology: its two modes validate (anything else is reported at its
//! line without being echoed), the schema names them, a run of `from-env` without a usable
//! `PEERLAB_NETWORK_KEY` is refused before anything starts, and every export requires the
//! key of the deploying side without ever holding it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use peerlab::topology::{self, NetworkKeyMode, TopologyError};
use serde_json::Value;

use crate::support::{BIN, ROOT};

const BASE: &str = "name: keyed\ngenesis: {count: 1}\ngroups:\n  - {name: peers, count: 2}\n";

fn keyed(mode: &str) -> String {
    format!("{BASE}network_key: {mode}\n")
}

/// `text` written to a fresh file of its own, for the CLI.
fn topology_file(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the topology");
    (dir, path)
}

/// `peerlab ARGS` with `PEERLAB_NETWORK_KEY` set to `key`, or removed.
fn peerlab(args: &[&str], key: Option<&str>, runs: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("PEERLAB_RUNS_DIR", runs)
        .env_remove("PEERLAB_NETWORK_KEY")
        .stdin(Stdio::null());
    if let Some(key) = key {
        cmd.env("PEERLAB_NETWORK_KEY", key);
    }
    cmd.output().expect("run peerlab")
}

#[test]
fn both_modes_validate_and_none_is_the_default() {
    let plain = topology::parse_str(BASE, "plain.yaml").expect("valid");
    assert_eq!(plain.network_key, None);
    for (text, mode) in [
        ("per-run", NetworkKeyMode::PerRun),
        ("from-env", NetworkKeyMode::FromEnv),
    ] {
        let t = topology::parse_str(&keyed(text), "keyed.yaml").expect("valid");
        assert_eq!(t.network_key, Some(mode));
        // The report says which mode ran, and nothing of a key.
        let report = serde_json::to_value(&t).expect("serializes");
        assert_eq!(report["network_key"], text);
    }
}

#[test]
fn a_value_that_is_not_a_mode_is_reported_at_its_line_without_echoing_it() {
    for value in [
        "\"6f1c2a9be0d34c77a1f05e2b9c8d7a6e\"",
        "per_run",
        "correct horse battery staple",
    ] {
        let source = keyed(value);
        let Err(TopologyError { diagnostics }) = topology::parse_str(&source, "bad.yaml") else {
            panic!("{value} was accepted");
        };
        let [d] = &diagnostics[..] else {
            panic!("{value}: one diagnostic expected, got {diagnostics:?}");
        };
        assert_eq!(
            (d.line, d.column, d.path.as_str()),
            (5, 14, "network_key"),
            "{d}"
        );
        assert!(
            d.message.contains("`per-run`") && d.message.contains("`from-env`"),
            "{d}"
        );
        let shown = d.to_string();
        let secret = value.trim_matches('"');
        assert!(!shown.contains(secret), "the value is echoed: {shown}");
    }
}

#[test]
fn the_schema_lists_the_two_modes() {
    let schema = topology::json_schema();
    let validator = jsonschema::validator_for(&schema).expect("a schema");
    let instance = |mode: &str| -> Value {
        serde_json::json!({"name": "x", "genesis": {"count": 1}, "network_key": mode})
    };
    assert!(validator.is_valid(&instance("per-run")));
    assert!(validator.is_valid(&instance("from-env")));
    assert!(!validator.is_valid(&instance("0123456789abcdef0123456789abcdef")));
}

#[test]
fn a_from_env_run_without_a_usable_key_is_bad_input_and_starts_nothing() {
    let (dir, file) = topology_file(&keyed("from-env"), "keyed.yaml");
    let runs = dir.path().join("runs");
    let file = file.to_string_lossy();
    let args = ["run", "--runtime", "local", &*file];
    for (key, says) in [
        (None, "PEERLAB_NETWORK_KEY is not set"),
        (Some(""), "PEERLAB_NETWORK_KEY is empty"),
        (Some("hunter2"), "fewer than the 16"),
    ] {
        let out = peerlab(&args, key, &runs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key:?}: {stderr}");
        assert!(stderr.contains(says), "{key:?}: {stderr}");
        assert!(
            stderr.contains("openssl rand -hex 32"),
            "says what to do: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "the key is never quoted: {stderr}"
        );
        // Nothing started: no run directory, no logs.
        let started = std::fs::read_dir(&runs).map_or(0, |d| d.count());
        assert_eq!(started, 0, "{key:?}: a run directory was made");
    }
}

/// The Compose Specification's own schema (tests/data/compose-spec.json).
fn compose_violations(yaml: &str) -> Vec<String> {
    let path = Path::new(ROOT).join("tests/data/compose-spec.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("json");
    let instance: Value = serde_saphyr::from_str(yaml).expect("yaml");
    let validator = jsonschema::validator_for(&schema).expect("a schema");
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every service's `PEERLAB_NETWORK_KEY`, in file order.
fn key_variables(yaml: &str) -> Vec<Option<String>> {
    let file: Value = serde_saphyr::from_str(yaml).expect("yaml");
    let services = file["services"].as_object().expect("services");
    services
        .values()
        .map(|s| {
            s["environment"]["PEERLAB_NETWORK_KEY"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn compose_and_stack_files_require_the_key_of_the_deploying_shell() {
    for mode in ["per-run", "from-env"] {
        let (dir, file) = topology_file(&keyed(mode), "keyed.yaml");
        let runs = dir.path().join("runs");
        let file = file.to_string_lossy();
        for stack in [false, true] {
            let mut args = vec!["compose", &*file];
            if stack {
                args.push("--stack");
            }
            // An export reads no key: none is set here, and none may be needed.
            let out = peerlab(&args, None, &runs);
            let yaml = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{mode} {stack}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(compose_violations(&yaml), Vec::<String>::new(), "\n{yaml}");
            let variables = key_variables(&yaml);
            assert!(!variables.is_empty());
            assert!(
                yaml.contains("export PEERLAB_NETWORK_KEY=\"$(openssl rand -hex 32)\""),
                "the header says how to make a key:\n{yaml}"
            );
            for variable in variables {
                let variable = variable.expect("every service has PEERLAB_NETWORK_KEY");
                assert!(
                    variable.starts_with("${PEERLAB_NETWORK_KEY:?") && variable.ends_with('}'),
                    "a required variable: {variable}"
                );
                assert!(variable.contains("header"), "{variable}");
                // Compose would take `$` or `}` for interpolation inside the message, and
                // `docker stack deploy` a `-` for a default value.
                let message = &variable["${PEERLAB_NETWORK_KEY:?".len()..variable.len() - 1];
                assert!(
                    !message.contains('$') && !message.contains('}') && !message.contains('-'),
                    "{message}"
                );
            }
            assert!(
                yaml.contains("export PEERLAB_NETWORK_KEY="),
                "the header says how:\n{yaml}"
            );
        }
    }
    // Without `network_key`, no service asks for one.
    let (dir, file) = topology_file(BASE, "plain.yaml");
    let out = peerlab(
        &["compose", &file.to_string_lossy()],
        None,
        &dir.path().join("runs"),
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(key_variables(&yaml).iter().all(Option::is_none), "{yaml}");
    assert!(!yaml.contains("PEERLAB_NETWORK_KEY"), "{yaml}");
}

#[test]
fn the_kubernetes_export_reads_the_key_from_a_secret_it_says_how_to_create() {
    let (dir, file) = topology_file(&keyed("per-run"), "keyed.yaml");
    let secret = "6f1c2a9be0d34c77a1f05e2b9c8d7a6e6f1c2a9be0d34c77a1f05e2b9c8d7a6e";
    let out = peerlab(
        &["export", "kubernetes", &file.to_string_lossy()],
        Some(secret),
        &dir.path().join("runs"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "kubectl -n peerlab-keyed create secret generic peerlab-network-key --from-literal=key="
        ),
        "{text}"
    );
    assert!(
        !text.contains(secret),
        "the key of the environment is never written"
    );
    let sets: Vec<Value> = text
        .split("\n---\n")
        .filter(|d| d.contains("kind: StatefulSet"))
        .map(|d| serde_saphyr::from_str(d).expect("a document"))
        .collect();
    assert_eq!(sets.len(), 2, "{text}");
    for set in sets {
        let env = &set["spec"]["template"]["spec"]["containers"][0]["env"];
        let key = env
            .as_array()
            .and_then(|vars| vars.iter().find(|v| v["name"] == "PEERLAB_NETWORK_KEY"))
            .unwrap_or_else(|| panic!("no PEERLAB_NETWORK_KEY in {env}"));
        let reference = &key["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"], "peerlab-network-key");
        assert_eq!(reference["key"], "key");
        assert_eq!(reference["optional"], false);
    }
}
