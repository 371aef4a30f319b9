//! `peerlab export kubernetes` as a user runs it: what it writes (to standard output or a
//! file), the flags that change it, its help, and the topologies it refuses.

use serde_json::Value;

use crate::support::cli::run_cli;
use crate::support::topologies_dir;

/// Every YAML document of `text` (comments and separators skipped).
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

fn quickstart() -> String {
    topologies_dir()
        .join("quickstart.yaml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn export_writes_the_objects_of_every_group_to_standard_output() {
    let (status, stdout, stderr) = run_cli(&["export", "kubernetes", &quickstart()]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("# Kubernetes objects"), "{stdout}");
    let docs = documents(&stdout);
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "Service",
            "Service",
            "StatefulSet",
            "StatefulSet"
        ]
    );
    assert_eq!(docs[0]["metadata"]["name"], "peerlab-quickstart");
    assert_eq!(docs[0]["metadata"]["labels"]["peerlab.run"], "quickstart");
    // quickstart: one genesis and four peers.
    assert_eq!(docs[3]["metadata"]["name"], "genesis");
    assert_eq!(docs[3]["spec"]["replicas"], 1);
    assert_eq!(docs[4]["metadata"]["name"], "peers");
    assert_eq!(docs[4]["spec"]["replicas"], 4);
    let container = &docs[4]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "peerlab:0.1.0", "the topology's image");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    let genesis = container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == "PEERLAB_GENESIS"))
        .map(|e| e["value"].clone());
    assert_eq!(
        genesis,
        Some(Value::from(
            "genesis-0.genesis.peerlab-quickstart.svc.cluster.local:7070"
        ))
    );
}

#[test]
fn export_flags_choose_namespace_image_pull_policy_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("objects.yaml");
    let out_text = out.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_cli(&[
        "export",
        "kubernetes",
        &quickstart(),
        "--namespace",
        "lab-one",
        "--image",
        "registry.example/peerlab:9",
        "--pull-policy",
        "Always",
        "-o",
        &out_text,
    ]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.is_empty(), "the YAML goes to the file: {stdout}");
    assert!(stderr.contains("kubectl apply -f"), "{stderr}");
    let text = std::fs::read_to_string(&out).expect("the file was written");
    let docs = documents(&text);
    assert_eq!(docs[0]["metadata"]["name"], "lab-one");
    for d in &docs[1..] {
        assert_eq!(d["metadata"]["namespace"], "lab-one");
    }
    let container = &docs[3]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/peerlab:9");
    assert_eq!(container["imagePullPolicy"], "Always");

    let (status, _, stderr) = run_cli(&[
        "export",
        "kubernetes",
        &quickstart(),
        "--namespace",
        "Bad_Name",
    ]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("namespace"), "{stderr}");
}

#[test]
fn export_refuses_what_a_cluster_cannot_run_and_bad_files() {
    // `left` and `right` meet only through the genesis; a cluster has one pod network.
    let dir = tempfile::tempdir().expect("tempdir");
    let apart = dir.path().join("apart.yaml");
    std::fs::write(
        &apart,
        "name: apart\ngenesis: {count: 1, networks: [a, b]}\ngroups:\n  \
         - {name: left, count: 1, networks: [a]}\n  - {name: right, count: 1, networks: [b]}\n\
         networks:\n  - {name: a}\n  - {name: b}\n",
    )
    .expect("write");
    let (status, stdout, stderr) = run_cli(&["export", "kubernetes", &apart.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("share no network"), "{stderr}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\ngenesis: {count: 0}\n").expect("write");
    let (status, _, stderr) = run_cli(&["export", "kubernetes", &bad.to_string_lossy()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}

#[test]
fn export_help_says_how_to_apply_and_load_the_image() {
    let (status, stdout, _) = run_cli(&["export", "kubernetes", "--help"]);
    assert!(status.success());
    for needle in [
        "kubectl apply -f",
        "kind load docker-image",
        "k3d image import",
        "--namespace",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing:\n{stdout}");
    }
}
