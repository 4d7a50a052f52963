//! Contract tests: the Helm chart (`deploy/helm/tasks`) and the `tasks-server` binary agree.
//!
//! Every manifest is rendered by the real `helm template` (`.tools/bin/helm`, else `helm` on
//! `PATH`; without either the tests fail and say to run `scripts/ensure-tools.sh helm`) for
//! each overlay in `deploy/helm/values/` and for the CI values file with every optional
//! feature on. Every claim about the binary is asked of the binary itself: `check-config`
//! for configuration keys, defaults and effective values, and a running server for the
//! health routes. Nothing here needs a cluster or a database.
//!
//! What a pod gives the app container (variables, secret files) is computed from the
//! rendered manifests by `scripts/lib/pod_environment.py`, as the kubelet would.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tasks_test_support::http::StatusCode;
use tasks_test_support::process::{RunOutput, ServiceCommand, ServiceProcess, closed_port};

use crate::support::{BIN, test_token};

/// The binary's source of `DEFAULT_SECRETS_DIR` (it is not printed by `check-config`).
const SETTINGS_RS: &str = include_str!("../../src/settings.rs");

/// The health routes of `tasks-health`, as the chart must use them.
const LIVEZ: &str = "/livez";
const READYZ: &str = "/readyz";

const CHART: &str = "deploy/helm/tasks";
const RELEASE: &str = "tasks";
const NAMESPACE: &str = "tasks";
/// Name of the app container in the Deployment.
const APP_CONTAINER: &str = "tasks-server";
/// Variables the config loader reserves for itself; they are not configuration keys.
const RESERVED_VARS: [&str; 2] = ["TASKS_SECRETS_DIR", "TASKS_CONFIG_FILE"];

/// The values files under test: each environment overlay and the all-features CI file.
const CASES: [(&str, &str); 4] = [
    ("local", "deploy/helm/values/local.yaml"),
    ("staging", "deploy/helm/values/staging.yaml"),
    ("production", "deploy/helm/values/production.yaml"),
    ("ci/all-features", "deploy/helm/ci/all-features.yaml"),
];

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The helm binary: the project-local one, else one on `PATH`. Never skips.
fn helm() -> PathBuf {
    let local = repo_root().join(".tools/bin/helm");
    if local.is_file() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("helm");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "helm not found (neither .tools/bin/helm nor helm on PATH): run `scripts/ensure-tools.sh helm` \
         first; the chart contract tests need a real helm and never skip"
    );
}

/// One `helm template` output, parsed.
#[derive(Debug)]
struct Render {
    /// Which values (and `--set`s) produced it, for messages.
    label: String,
    docs: Vec<Value>,
    /// What the Deployment's pod gives the app container, computed once.
    environment: OnceLock<PodEnvironment>,
}

/// The answer of `scripts/lib/pod_environment.py` (the fields used here).
#[derive(Debug, Deserialize)]
struct PodEnvironment {
    /// Every variable, as the container sees it.
    env: BTreeMap<String, String>,
    /// Where each variable's value came from (`value`, `envFrom configMap NAME`, …).
    sources: BTreeMap<String, String>,
    env_from: Vec<EnvFrom>,
    /// References to ConfigMaps, Secrets or keys that are not rendered.
    env_problems: Vec<String>,
    mounts: Vec<Mount>,
    /// Container path → the file the volume puts there.
    files: BTreeMap<String, MountedFile>,
}

#[derive(Debug, Deserialize)]
struct EnvFrom {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Mount {
    path: String,
    volume: String,
    kind: Option<String>,
    sub_path: Option<String>,
    problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct MountedFile {
    /// `secret NAME` or `configMap NAME`.
    source: String,
    /// The content, when the chart renders it (not for an existing Secret).
    data: Option<String>,
}

/// Runs `scripts/lib/pod_environment.py` on `docs` for the app container of the Deployment.
fn pod_environment(label: &str, docs: &[Value]) -> PodEnvironment {
    let script = repo_root().join("scripts/lib/pod_environment.py");
    let request = json!({
        "docs": docs,
        "kind": "Deployment",
        "container": APP_CONTAINER,
    });
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    // The script reads all of its input before it answers: no deadlock.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write the rendered manifests");
    let out = child
        .wait_with_output()
        .expect("wait for pod_environment.py");
    assert!(
        out.status.success(),
        "{label}: pod_environment.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{label}: pod_environment.py answered no environment: {e}"))
}

/// What a release passes on top of the production overlay, which deploys by digest only
/// (`image.requireDigest`).
const RELEASE_DIGEST: &str =
    "image.digest=sha256:5555555555555555555555555555555555555555555555555555555555555555";

/// `--set`s every render of a case gets, as its deploy would pass them.
fn case_sets(label: &str) -> &'static [&'static str] {
    if label == "production" {
        &[RELEASE_DIGEST]
    } else {
        &[]
    }
}

/// Renders the chart with one values file and extra `--set` arguments.
fn render(label: &str, values: &str, sets: &[&str]) -> Render {
    let root = repo_root();
    let mut cmd = Command::new(helm());
    cmd.current_dir(&root).args([
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "-f",
        values,
    ]);
    for set in case_sets(label).iter().chain(sets) {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("run helm template");
    let label = if sets.is_empty() {
        label.to_owned()
    } else {
        format!("{label} --set {}", sets.join(" --set "))
    };
    assert!(
        out.status.success(),
        "helm template failed for {label} ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{label}: rendered YAML does not parse: {e}"));
        if !value.is_null() {
            docs.push(value);
        }
    }
    assert!(!docs.is_empty(), "{label}: helm rendered nothing");
    Render {
        label,
        docs,
        environment: OnceLock::new(),
    }
}

/// Every case rendered once, shared by the tests.
fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| {
        CASES
            .iter()
            .map(|(label, file)| render(label, file, &[]))
            .collect()
    })
}

fn local_render() -> &'static Render {
    renders()
        .iter()
        .find(|r| r.label == "local")
        .expect("the local overlay is a case")
}

impl Render {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|d| str_at(d, "/kind") == Some(kind))
            .collect()
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.all(kind)
            .into_iter()
            .find(|d| str_at(d, "/metadata/name") == Some(name))
    }

    fn deployment(&self) -> &Value {
        let all = self.all("Deployment");
        assert_eq!(
            all.len(),
            1,
            "{}: expected exactly one Deployment, found {}",
            self.label,
            all.len()
        );
        all[0]
    }

    /// Every rendered pod spec — the Deployment's and StatefulSet's templates and bare
    /// Pods (the Helm test) — named `Kind name` for messages.
    fn pod_specs(&self) -> Vec<(String, &Value)> {
        let mut pods = Vec::new();
        for kind in ["Deployment", "StatefulSet", "Pod"] {
            for doc in self.all(kind) {
                let name = str_at(doc, "/metadata/name").unwrap_or_default();
                let spec = if kind == "Pod" {
                    doc.get("spec")
                } else {
                    doc.pointer("/spec/template/spec")
                };
                pods.push((format!("{kind} {name}"), spec.unwrap_or(&Value::Null)));
            }
        }
        pods
    }

    fn deployment_name(&self) -> &str {
        str_at(self.deployment(), "/metadata/name").expect("Deployment has a name")
    }

    fn pod_spec(&self) -> &Value {
        self.deployment()
            .pointer("/spec/template/spec")
            .expect("Deployment has a pod spec")
    }

    fn app_container(&self) -> &Value {
        arr(self.pod_spec(), "/containers")
            .iter()
            .find(|c| str_at(c, "/name") == Some(APP_CONTAINER))
            .unwrap_or_else(|| {
                panic!(
                    "{}: the Deployment has no container named {APP_CONTAINER}",
                    self.label
                )
            })
    }

    /// The Deployment's pod-template annotation `key`.
    fn pod_annotation(&self, key: &str) -> String {
        self.deployment()
            .pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the Deployment's pod template has no {key} annotation",
                    self.label
                )
            })
            .to_owned()
    }

    /// What the Deployment's pod gives the app container.
    fn environment(&self) -> &PodEnvironment {
        self.environment
            .get_or_init(|| pod_environment(&self.label, &self.docs))
    }

    /// The environment the app container gets: ConfigMaps from `envFrom`, then `env`.
    /// Secrets must be files and `TASKS_` values literal: anything else fails the test.
    fn container_env(&self) -> BTreeMap<String, String> {
        let given = self.environment();
        assert!(
            given.env_problems.is_empty(),
            "{}: {}",
            self.label,
            given.env_problems.join("; ")
        );
        for from in &given.env_from {
            assert!(
                from.kind == "configMap",
                "{}: envFrom names {} {}, which is not a ConfigMap (secrets must be mounted as files)",
                self.label,
                from.kind,
                from.name
            );
        }
        for (name, source) in &given.sources {
            assert!(
                !name.starts_with("TASKS_")
                    || source == "value"
                    || source.starts_with("envFrom configMap "),
                "{}: {name} comes from {source}; the contract needs literal TASKS_ values, and secrets belong in files",
                self.label
            );
        }
        given.env.clone()
    }

    /// Stand-ins for the files mounted into the app container, by container path: the
    /// rendered content, else a test CA for a certificate (`*.crt`, `*.pem`: the binary
    /// parses it), else a placeholder.
    fn mounted_files(&self) -> BTreeMap<String, String> {
        self.environment()
            .files
            .iter()
            .map(|(path, file)| {
                let content = file.data.clone().unwrap_or_else(|| {
                    if path.ends_with(".crt") || path.ends_with(".pem") {
                        test_ca_pem().to_owned()
                    } else {
                        "placeholder\n".to_owned()
                    }
                });
                (path.clone(), content)
            })
            .collect()
    }

    /// Only the `TASKS_*` part of [`Render::container_env`].
    fn tasks_env(&self) -> BTreeMap<String, String> {
        self.container_env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("TASKS_"))
            .collect()
    }

    /// Resolves a port reference (number, or the name of a container port) of the app
    /// container to a number.
    fn container_port(&self, port: &Value) -> Option<u64> {
        resolve_port(self.app_container(), port)
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn arr<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn obj_strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default()
}

/// A scalar as the string Kubernetes would hand the process.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A port given as a number or a string holding digits.
fn port_number(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// A port reference of `container`: a number, or the name of one of its ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(_) => port.as_u64(),
        Value::String(name) => arr(container, "/ports")
            .iter()
            .find(|p| str_at(p, "/name") == Some(name.as_str()))
            .and_then(|p| p.get("containerPort"))
            .and_then(port_number),
        _ => None,
    }
}

/// `selector` (matchLabels or a Service selector) selects pods labelled `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Fails with every collected problem, one per line.
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------
// Asking the binary
// ---------------------------------------------------------------------------------------

/// One run of `tasks-server check-config`.
#[derive(Debug)]
struct CheckConfig {
    output: RunOutput,
    /// key → (value, origin) from the printed effective configuration.
    effective: BTreeMap<String, (Value, String)>,
}

impl CheckConfig {
    fn success(&self) -> bool {
        self.output.success()
    }

    fn report(&self) -> String {
        self.output.report()
    }

    fn stderr(&self) -> &str {
        &self.output.stderr
    }

    fn u64(&self, key: &str) -> u64 {
        self.effective
            .get(key)
            .and_then(|(v, _)| v.as_u64())
            .unwrap_or_else(|| panic!("check-config printed no integer {key}:\n{}", self.report()))
    }

    fn origin(&self, key: &str) -> Option<&str> {
        self.effective.get(key).map(|(_, origin)| origin.as_str())
    }
}

/// What a secret file named `name` holds for these tests: a valid API-token line for
/// `auth.api_tokens`, a placeholder for the rest.
fn dummy_secret(name: &str) -> String {
    if name == "auth.api_tokens" {
        format!("{}\n", test_token().line())
    } else {
        "dummy-secret-value\n".to_owned()
    }
}

/// A self-signed CA certificate (PEM) made by `openssl` once per test run: the stand-in
/// for a CA bundle the chart mounts from a Secret it does not render.
fn test_ca_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("openssl")
            .current_dir(dir.path())
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "1",
                "-subj",
                "/CN=chart contract test CA",
            ])
            .output()
            .expect("run openssl (Debian: apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.path().join("ca.crt")).expect("read the test CA")
    })
}

/// The binary as the container would run it: exactly `vars` (no inherited environment),
/// a secrets directory holding one dummy file per name in `secret_files`, and a variable
/// naming a mounted file (a key of `files`, container path → content) pointed at a copy.
fn container_command(
    vars: &BTreeMap<String, String>,
    secret_files: &[String],
    files: &BTreeMap<String, String>,
) -> ServiceCommand {
    let mut command = ServiceCommand::new(BIN, "TASKS").clear_env();
    for (var, value) in vars {
        if var == "TASKS_SECRETS_DIR" {
            continue;
        }
        command = match files.get(value) {
            Some(content) => command.env_file(var, content),
            None => command.env(var, value),
        };
    }
    for name in secret_files {
        command = command.secret_file(name, dummy_secret(name));
    }
    command
}

/// Runs `check-config` in the environment of [`container_command`].
fn check_config(
    vars: &BTreeMap<String, String>,
    secret_files: &[String],
    files: &BTreeMap<String, String>,
) -> CheckConfig {
    let output = container_command(vars, secret_files, files)
        .arg("check-config")
        .output();
    let mut effective = BTreeMap::new();
    for line in output.stdout.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, rest)) = line.split_once(" = ") else {
            continue;
        };
        let Some((value, origin)) = rest.rsplit_once("  # ") else {
            continue;
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        effective.insert(key.to_owned(), (value, origin.to_owned()));
    }
    CheckConfig { output, effective }
}

/// `check-config` with the environment and secret files the chart gives the container.
/// Panics when the binary rejects them (that is a contract failure of its own).
fn effective_config(render: &Render) -> CheckConfig {
    let secrets = secret_files(render).unwrap_or_default();
    let run = check_config(&render.tasks_env(), &secrets, &render.mounted_files());
    assert!(
        run.success(),
        "{}: tasks-server check-config rejects the chart's configuration: {}",
        render.label,
        run.report()
    );
    run
}

/// `TASKS_HTTP__MAX_BODY_BYTES` → `http.max_body_bytes`.
fn key_of_var(var: &str) -> String {
    var.trim_start_matches("TASKS_")
        .to_ascii_lowercase()
        .replace("__", ".")
}

/// `DEFAULT_SECRETS_DIR` from the binary's settings.rs.
fn binary_default_secrets_dir() -> String {
    SETTINGS_RS
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const DEFAULT_SECRETS_DIR: &str = \""))
        .and_then(|rest| rest.strip_suffix("\";"))
        .expect("bin/tasks-server/src/settings.rs declares `pub const DEFAULT_SECRETS_DIR: &str = \"...\";`")
        .to_owned()
}

/// The secrets directory of the container: `TASKS_SECRETS_DIR` as the chart sets it, or
/// the binary's default.
fn secrets_dir(render: &Render) -> String {
    render
        .container_env()
        .get("TASKS_SECRETS_DIR")
        .cloned()
        .unwrap_or_else(binary_default_secrets_dir)
}

/// File names the chart mounts into the secrets directory.
fn secret_files(render: &Render) -> Result<Vec<String>, String> {
    let label = &render.label;
    let dir = secrets_dir(render);
    let dir = dir.trim_end_matches('/');
    let given = render.environment();
    let mounts: Vec<&Mount> = given
        .mounts
        .iter()
        .filter(|m| m.path.trim_end_matches('/') == dir)
        .collect();
    let [mount] = mounts.as_slice() else {
        return Err(format!(
            "{label}: expected one volume mounted at the secrets dir {dir}, found {}",
            mounts.len()
        ));
    };
    if mount.sub_path.is_some() {
        return Err(format!(
            "{label}: the secrets mount uses subPath (files would never follow a rotated Secret)"
        ));
    }
    if !mount.problems.is_empty() {
        return Err(format!("{label}: {}", mount.problems.join("; ")));
    }
    if !matches!(mount.kind.as_deref(), Some("secret" | "projected")) {
        return Err(format!(
            "{label}: volume {} at the secrets dir is not a Secret volume ({:?})",
            mount.volume, mount.kind
        ));
    }
    Ok(given
        .files
        .iter()
        .filter(|(_, file)| file.source.starts_with("secret "))
        .filter_map(|(path, _)| path.strip_prefix(dir)?.strip_prefix('/'))
        .filter(|name| !name.contains('/'))
        .map(str::to_owned)
        .collect())
}

// ---------------------------------------------------------------------------------------
// A running server
// ---------------------------------------------------------------------------------------

/// `tasks-server serve` with the chart's `TASKS_*` configuration and secret files (dummy
/// values) from `render`, moved to free loopback ports and a database on a closed port.
fn start_server(render: &Render) -> ServiceProcess {
    let moved = [
        "TASKS_HTTP__HOST",
        "TASKS_HTTP__PORT",
        "TASKS_ADMIN__HOST",
        "TASKS_ADMIN__PORT",
    ];
    let mut env = render.tasks_env();
    env.retain(|k, _| !moved.contains(&k.as_str()));
    for (var, value) in [
        ("TASKS_HTTP__WORKERS", "1".to_owned()),
        ("TASKS_DATABASE__HOST", "127.0.0.1".to_owned()),
        ("TASKS_DATABASE__PORT", closed_port().to_string()),
        ("TASKS_DATABASE__SSLMODE", "disable".to_owned()),
        ("TASKS_SHUTDOWN__DRAIN_DELAY_SECS", "0".to_owned()),
    ] {
        env.insert(var.to_owned(), value);
    }
    container_command(
        &env,
        &secret_files(render).unwrap_or_default(),
        &render.mounted_files(),
    )
    .arg("serve")
    .spawn()
}

/// The status of `GET path` on the admin listener.
async fn admin_status(server: &ServiceProcess, path: &str) -> StatusCode {
    server.admin().get(path).await.status
}

// ---------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn probes_use_the_admin_port_and_the_binarys_health_routes() {
    let mut problems = Vec::new();
    let mut chart_paths = BTreeSet::new();
    for render in renders() {
        let label = &render.label;
        let admin_port = effective_config(render).u64("admin.port");
        let container = render.app_container();
        for (probe, want_path) in [
            ("startupProbe", LIVEZ),
            ("livenessProbe", LIVEZ),
            ("readinessProbe", READYZ),
        ] {
            let Some(get) = container.get(probe).map(|p| p.get("httpGet")) else {
                problems.push(format!("{label}: the app container has no {probe}"));
                continue;
            };
            let Some(get) = get else {
                problems.push(format!("{label}: {probe} is not an httpGet probe"));
                continue;
            };
            let path = str_at(get, "/path").unwrap_or("/");
            chart_paths.insert(path.to_owned());
            if path != want_path {
                problems.push(format!(
                    "{label}: {probe} GETs {path}, expected {want_path}"
                ));
            }
            if let Some(scheme) = str_at(get, "/scheme").filter(|s| *s != "HTTP") {
                problems.push(format!(
                    "{label}: {probe} uses scheme {scheme}; the admin listener speaks plain HTTP"
                ));
            }
            let port = get.get("port").unwrap_or(&Value::Null);
            match render.container_port(port) {
                Some(number) if number == admin_port => {}
                Some(number) => problems.push(format!(
                    "{label}: {probe} targets port {port} = {number}, but the binary's admin.port is {admin_port}"
                )),
                None => problems.push(format!("{label}: {probe} port {port} is not a port of the app container")),
            }
        }
    }
    assert_no_problems("probes", &problems);

    // The routes are real: the binary, started with the local overlay's configuration and
    // no database, answers /livez 200 and /readyz 503 (not ready), and 404 elsewhere.
    let mut server = start_server(local_render());
    server
        .wait_for_admin(LIVEZ, StatusCode::OK, Duration::from_secs(30))
        .await;
    server
        .wait_for_admin(
            READYZ,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(15),
        )
        .await;
    let missing = admin_status(&server, "/no-such-route-for-contract-tests").await;
    assert_eq!(
        missing,
        StatusCode::NOT_FOUND,
        "an unknown admin route must answer 404, or the checks above prove nothing"
    );
    for path in &chart_paths {
        let status = admin_status(&server, path).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "the chart probes {path}, which the binary does not serve; log:\n{}",
            server.log()
        );
    }
}

#[test]
fn every_tasks_variable_the_chart_sets_is_a_config_key() {
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        let env = render.tasks_env();
        if env.is_empty() {
            problems.push(format!(
                "{label}: the chart sets no TASKS_ variables at all"
            ));
            continue;
        }
        let secrets = secret_files(render).unwrap_or_default();
        let run = check_config(&env, &secrets, &render.mounted_files());
        if !run.success() {
            problems.push(format!(
                "{label}: check-config rejects the chart's TASKS_ variables: {}",
                run.report()
            ));
            continue;
        }
        // Each variable took effect on the key it names (nothing ignored or shadowed).
        for var in env.keys().filter(|v| !RESERVED_VARS.contains(&v.as_str())) {
            let key = key_of_var(var);
            match run.origin(&key) {
                Some(origin) if origin == var => {}
                other => problems.push(format!(
                    "{label}: {var} should set {key}, but check-config reports its origin as {other:?}"
                )),
            }
        }
    }
    assert_no_problems("TASKS_ variables", &problems);

    // The check can fail: a misspelt variable is rejected, naming the variable.
    let render = local_render();
    let mut env = render.tasks_env();
    env.insert("TASKS_HTTP__PROT".to_owned(), "8080".to_owned());
    let run = check_config(
        &env,
        &secret_files(render).unwrap_or_default(),
        &render.mounted_files(),
    );
    assert!(
        !run.success(),
        "check-config accepted the misspelt TASKS_HTTP__PROT: {}",
        run.report()
    );
    assert!(
        run.stderr().contains("TASKS_HTTP__PROT"),
        "check-config did not name TASKS_HTTP__PROT: {}",
        run.report()
    );
}

#[test]
fn secret_files_are_config_keys_mounted_at_the_secrets_dir() {
    let default_dir = binary_default_secrets_dir();
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        let dir = secrets_dir(render);
        if !render.container_env().contains_key("TASKS_SECRETS_DIR") && dir != default_dir {
            problems.push(format!(
                "{label}: secrets dir {dir} is not the binary's default {default_dir}"
            ));
        }
        let names = match secret_files(render) {
            Ok(names) => names,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        if !names.iter().any(|n| n == "database.password") {
            problems.push(format!(
                "{label}: no database.password file at {dir} (files: {names:?})"
            ));
        }
        // Ask the binary: each file name is a key, and the value comes from that file.
        let run = check_config(&BTreeMap::new(), &names, &BTreeMap::new());
        if !run.success() {
            problems.push(format!(
                "{label}: check-config rejects the secret files {names:?}: {}",
                run.report()
            ));
            continue;
        }
        for name in &names {
            match run.origin(name) {
                Some(origin) if origin.starts_with("secret file ") => {}
                other => problems.push(format!(
                    "{label}: secret file {name} is not read as config key {name} (origin {other:?})"
                )),
            }
        }
    }
    assert_no_problems("secret files", &problems);

    // The check can fail: a misspelt secret file name is rejected.
    let run = check_config(
        &BTreeMap::new(),
        &["database.pasword".to_owned()],
        &BTreeMap::new(),
    );
    assert!(
        !run.success(),
        "check-config accepted a secret file named database.pasword: {}",
        run.report()
    );
}

/// `USER uid:gid` of docker/Dockerfile (every USER line must agree).
fn image_user() -> (u64, u64) {
    let path = repo_root().join("docker/Dockerfile");
    let text = std::fs::read_to_string(&path).expect("read docker/Dockerfile");
    let users: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .map(str::trim)
        .collect();
    let [user] = users.iter().collect::<Vec<_>>()[..] else {
        panic!("docker/Dockerfile must have exactly one USER value, found {users:?}");
    };
    let (uid, gid) = user
        .split_once(':')
        .unwrap_or_else(|| panic!("Dockerfile USER {user} is not numeric uid:gid"));
    let parse = |s: &str| {
        s.parse()
            .unwrap_or_else(|_| panic!("Dockerfile USER {user} is not numeric uid:gid"))
    };
    (parse(uid), parse(gid))
}

#[test]
fn containers_run_as_the_image_user_non_root_read_only() {
    let (uid, gid) = image_user();
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        let image = str_at(render.app_container(), "/image").expect("app container has an image");
        // Every pod running the app image: the Deployment's and the Helm test's.
        for (owner, spec) in render.pod_specs() {
            let pod_ctx = spec.get("securityContext").unwrap_or(&Value::Null);
            let containers = arr(spec, "/containers")
                .iter()
                .chain(arr(spec, "/initContainers"));
            for container in containers.filter(|c| str_at(c, "/image") == Some(image)) {
                let name = str_at(container, "/name").unwrap_or_default();
                let ctx = container.get("securityContext").unwrap_or(&Value::Null);
                let field = |key: &str| ctx.get(key).or_else(|| pod_ctx.get(key));
                let at = format!("{label}: {owner} container {name}");
                if field("runAsUser").and_then(Value::as_u64) != Some(uid) {
                    problems.push(format!(
                        "{at}: runAsUser {:?}, the image's UID is {uid}",
                        field("runAsUser")
                    ));
                }
                if field("runAsGroup").and_then(Value::as_u64) != Some(gid) {
                    problems.push(format!(
                        "{at}: runAsGroup {:?}, the image's GID is {gid}",
                        field("runAsGroup")
                    ));
                }
                if field("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
                    problems.push(format!("{at}: runAsNonRoot is not true"));
                }
                if ctx.get("readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
                    problems.push(format!("{at}: readOnlyRootFilesystem is not true"));
                }
            }
        }
    }
    assert_no_problems("security context", &problems);
}

#[test]
fn grace_period_exceeds_drain_delay_plus_shutdown_timeout() {
    let mut problems = Vec::new();
    for render in renders() {
        let config = effective_config(render);
        let drain = config.u64("shutdown.drain_delay_secs");
        let timeout = config.u64("shutdown.timeout_secs");
        // Kubernetes' default when the field is absent.
        let grace = render
            .pod_spec()
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        if grace <= drain + timeout {
            problems.push(format!(
                "{}: terminationGracePeriodSeconds {grace} <= drain_delay_secs {drain} + timeout_secs {timeout}",
                render.label
            ));
        }
    }
    assert_no_problems("grace period", &problems);
}

#[test]
fn checksum_annotations_follow_config_and_secret_values() {
    const CONFIG: &str = "checksum/config";
    const SECRET: &str = "checksum/secret";
    let mut problems = Vec::new();
    for (label, file) in CASES {
        let base = renders()
            .iter()
            .find(|r| r.label == label)
            .expect("case rendered");
        let again = render(label, file, &[]);
        for key in [CONFIG, SECRET] {
            if base.pod_annotation(key) != again.pod_annotation(key) {
                problems.push(format!(
                    "{label}: {key} differs between two identical renders"
                ));
            }
        }

        // A config value: the log level.
        let level = base
            .container_env()
            .get("TASKS_LOG__LEVEL")
            .cloned()
            .unwrap_or_default();
        let new_level = if level == "warn" { "error" } else { "warn" };
        let changed = render(label, file, &[&format!("config.log.level={new_level}")]);
        let rendered_level = changed.container_env().get("TASKS_LOG__LEVEL").cloned();
        if rendered_level.as_deref() != Some(new_level) {
            problems.push(format!(
                "{}: TASKS_LOG__LEVEL is {rendered_level:?}, expected {new_level}",
                changed.label
            ));
        }
        if base.pod_annotation(CONFIG) == changed.pod_annotation(CONFIG) {
            problems.push(format!(
                "{}: {CONFIG} did not change with the config",
                changed.label
            ));
        }
        if base.pod_annotation(SECRET) != changed.pod_annotation(SECRET) {
            problems.push(format!(
                "{}: {SECRET} changed although no secret did",
                changed.label
            ));
        }

        // A secret value: the explicit password where the overlay sets one, else the name
        // of the existing Secret the pods mount.
        let set = if label == "local" {
            "postgresql.auth.password=another-dev-password".to_owned()
        } else {
            "postgresql.auth.existingSecret=another-secret".to_owned()
        };
        let changed = render(label, file, &[&set]);
        if base.pod_annotation(SECRET) == changed.pod_annotation(SECRET) {
            problems.push(format!(
                "{}: {SECRET} did not change with the secret",
                changed.label
            ));
        }
        if base.pod_annotation(CONFIG) != changed.pod_annotation(CONFIG) {
            problems.push(format!(
                "{}: {CONFIG} changed although no config did",
                changed.label
            ));
        }
    }
    assert_no_problems("checksum annotations", &problems);
}

/// Pods a percentage or count of `total` stands for (PDBs round percentages up).
fn scaled(value: &Value, total: u64) -> Option<u64> {
    if let Some(n) = port_number(value) {
        return Some(n);
    }
    let percent: u64 = value.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((percent * total).div_ceil(100))
}

#[test]
fn pdb_never_blocks_every_eviction() {
    let mut problems = Vec::new();
    let mut budgets = 0;
    for render in renders() {
        let label = &render.label;
        let deployment = render.deployment();
        let name = render.deployment_name();
        let hpa = render.all("HorizontalPodAutoscaler").into_iter().find(|h| {
            str_at(h, "/spec/scaleTargetRef/kind") == Some("Deployment")
                && str_at(h, "/spec/scaleTargetRef/name") == Some(name)
        });
        let replicas = match hpa {
            Some(hpa) => hpa
                .pointer("/spec/minReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(1),
            None => deployment
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1),
        };
        let pod_labels = obj_strings(deployment.pointer("/spec/template/metadata/labels"));
        for pdb in render.all("PodDisruptionBudget") {
            budgets += 1;
            let pdb_name = str_at(pdb, "/metadata/name").unwrap_or_default();
            let at = format!("{label}: PDB {pdb_name} at {replicas} replica(s)");
            if !selects(
                &obj_strings(pdb.pointer("/spec/selector/matchLabels")),
                &pod_labels,
            ) {
                problems.push(format!("{at}: does not select the app pods"));
            }
            let spec = pdb.get("spec").unwrap_or(&Value::Null);
            let allowed = match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
                (Some(min), None) => scaled(min, replicas).map(|min| replicas.saturating_sub(min)),
                (None, Some(max)) => scaled(max, replicas),
                _ => {
                    problems.push(format!(
                        "{at}: needs exactly one of minAvailable and maxUnavailable"
                    ));
                    continue;
                }
            };
            match allowed {
                Some(n) if n >= 1 => {}
                Some(n) => problems.push(format!(
                    "{at}: allows {n} disruption(s), so every eviction is blocked"
                )),
                None => problems.push(format!("{at}: unreadable budget {spec}")),
            }
        }
    }
    assert_no_problems("pod disruption budgets", &problems);
    assert!(
        budgets > 0,
        "no values file renders a PodDisruptionBudget, so this test proves nothing"
    );
}

#[test]
fn services_select_only_their_own_pods() {
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        // Pod labels of every workload in the release.
        let mut workloads: Vec<(String, BTreeMap<String, String>, &Value)> = Vec::new();
        for kind in ["Deployment", "StatefulSet"] {
            for w in render.all(kind) {
                let name = str_at(w, "/metadata/name").unwrap_or_default();
                let spec = w.pointer("/spec/template/spec").unwrap_or(&Value::Null);
                workloads.push((
                    format!("{kind} {name}"),
                    obj_strings(w.pointer("/spec/template/metadata/labels")),
                    spec,
                ));
                if !selects(
                    &obj_strings(w.pointer("/spec/selector/matchLabels")),
                    &workloads.last().expect("pushed").1,
                ) {
                    problems.push(format!(
                        "{label}: {kind} {name} does not select its own pod template"
                    ));
                }
            }
        }
        for pod in render.all("Pod") {
            let name = str_at(pod, "/metadata/name").unwrap_or_default();
            workloads.push((
                format!("Pod {name}"),
                obj_strings(pod.pointer("/metadata/labels")),
                &Value::Null,
            ));
        }
        // Workload selectors must not reach each other's pods either.
        for kind in ["Deployment", "StatefulSet"] {
            for w in render.all(kind) {
                let name = str_at(w, "/metadata/name").unwrap_or_default();
                let me = format!("{kind} {name}");
                let selector = obj_strings(w.pointer("/spec/selector/matchLabels"));
                for (other, labels, _) in workloads.iter().filter(|(o, _, _)| *o != me) {
                    if selects(&selector, labels) {
                        problems.push(format!(
                            "{label}: {me}'s selector also matches the pods of {other}"
                        ));
                    }
                }
            }
        }

        let selected_by = |service: &Value| -> Vec<&(String, BTreeMap<String, String>, &Value)> {
            let selector = obj_strings(service.pointer("/spec/selector"));
            workloads
                .iter()
                .filter(|(_, labels, _)| selects(&selector, labels))
                .collect()
        };
        let app = format!("Deployment {}", render.deployment_name());
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        expected.insert(render.deployment_name().to_owned(), app.clone());
        let statefulsets = render.all("StatefulSet");
        for sts in &statefulsets {
            let sts_name = str_at(sts, "/metadata/name").unwrap_or_default();
            if let Some(governing) = str_at(sts, "/spec/serviceName") {
                expected.insert(governing.to_owned(), format!("StatefulSet {sts_name}"));
            }
        }
        // The Service the app connects to, when the database is in the release.
        let env = render.tasks_env();
        let db_host = env
            .get("TASKS_DATABASE__HOST")
            .map(|h| h.split('.').next().unwrap_or_default().to_owned());
        if let ([sts], Some(host)) = (statefulsets.as_slice(), &db_host) {
            let sts_name = str_at(sts, "/metadata/name").unwrap_or_default();
            match render.named("Service", host) {
                Some(_) => {
                    expected.insert(host.clone(), format!("StatefulSet {sts_name}"));
                }
                None => problems.push(format!(
                    "{label}: TASKS_DATABASE__HOST {host} is not a Service of the release"
                )),
            }
        }
        for (service_name, owner) in &expected {
            let Some(service) = render.named("Service", service_name) else {
                problems.push(format!("{label}: no Service {service_name} (for {owner})"));
                continue;
            };
            let selected: Vec<&str> = selected_by(service)
                .iter()
                .map(|(w, _, _)| w.as_str())
                .collect();
            if selected != [owner.as_str()] {
                problems.push(format!(
                    "{label}: Service {service_name} selects {selected:?}, expected only {owner}"
                ));
            }
        }
        // Every Service selects the pods of exactly one workload.
        for service in render.all("Service") {
            let service_name = str_at(service, "/metadata/name").unwrap_or_default();
            let selected: Vec<&str> = selected_by(service)
                .iter()
                .map(|(w, _, _)| w.as_str())
                .collect();
            if selected.len() != 1 {
                problems.push(format!(
                    "{label}: Service {service_name} selects {selected:?}, expected one workload"
                ));
            }
        }
        // The database Service forwards TASKS_DATABASE__PORT to PostgreSQL's container port.
        if let ([sts], Some(host)) = (statefulsets.as_slice(), &db_host)
            && let Some(service) = render.named("Service", host)
        {
            let port = effective_config(render).u64("database.port");
            let spec = sts.pointer("/spec/template/spec").unwrap_or(&Value::Null);
            let served = arr(service, "/spec/ports")
                .iter()
                .find(|p| p.get("port").and_then(Value::as_u64) == Some(port));
            let target_ok = served.is_some_and(|p| {
                let target = p.get("targetPort").unwrap_or(&Value::Null);
                arr(spec, "/containers")
                    .iter()
                    .any(|c| resolve_port(c, target).is_some())
            });
            if !target_ok {
                problems.push(format!(
                    "{label}: Service {host} has no port {port} targeting a PostgreSQL container port"
                ));
            }
        }
    }
    assert_no_problems("service selectors", &problems);
}

#[test]
fn api_port_is_a_container_port_the_service_and_routes_target() {
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        let http_port = effective_config(render).u64("http.port");
        let container = render.app_container();
        let declared: Vec<u64> = arr(container, "/ports")
            .iter()
            .filter_map(|p| p.get("containerPort").and_then(port_number))
            .collect();
        if !declared.contains(&http_port) {
            problems.push(format!(
                "{label}: container ports {declared:?} lack the binary's http.port {http_port}"
            ));
        }
        let name = render.deployment_name();
        let Some(service) = render.named("Service", name) else {
            problems.push(format!("{label}: no Service {name}"));
            continue;
        };
        // Service ports (by name and number) that reach the API listener.
        let api_ports: Vec<(Option<&str>, Option<u64>)> = arr(service, "/spec/ports")
            .iter()
            .filter(|p| {
                render.container_port(
                    p.get("targetPort")
                        .or_else(|| p.get("port"))
                        .unwrap_or(&Value::Null),
                ) == Some(http_port)
            })
            .map(|p| (str_at(p, "/name"), p.get("port").and_then(Value::as_u64)))
            .collect();
        if api_ports.is_empty() {
            problems.push(format!(
                "{label}: Service {name} has no port targeting the API port {http_port}"
            ));
        }
        let reaches_api = |port_name: Option<&str>, port_number: Option<u64>| {
            api_ports.iter().any(|(n, p)| {
                (port_name.is_some() && *n == port_name)
                    || (port_number.is_some() && *p == port_number)
            })
        };
        for ingress in render.all("Ingress") {
            for rule in arr(ingress, "/spec/rules") {
                for path in arr(rule, "/http/paths") {
                    let backend = path.pointer("/backend/service").unwrap_or(&Value::Null);
                    let (svc, port_name) =
                        (str_at(backend, "/name"), str_at(backend, "/port/name"));
                    let port_number = backend.pointer("/port/number").and_then(Value::as_u64);
                    if svc != Some(name) || !reaches_api(port_name, port_number) {
                        problems.push(format!(
                            "{label}: Ingress backend {backend} does not reach the API port"
                        ));
                    }
                }
            }
        }
        for route in render.all("HTTPRoute") {
            for rule in arr(route, "/spec/rules") {
                for backend in arr(rule, "/backendRefs") {
                    let port_number = backend.get("port").and_then(Value::as_u64);
                    if str_at(backend, "/name") != Some(name) || !reaches_api(None, port_number) {
                        problems.push(format!(
                            "{label}: HTTPRoute backend {backend} does not reach the API port"
                        ));
                    }
                }
            }
        }
    }
    assert_no_problems("API port", &problems);
}

#[tokio::test]
async fn service_monitor_scrapes_a_route_the_binary_serves() {
    let mut scraped: BTreeSet<String> = BTreeSet::new();
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        let admin_port = effective_config(render).u64("admin.port");
        for monitor in render.all("ServiceMonitor") {
            let selector = obj_strings(monitor.pointer("/spec/selector/matchLabels"));
            let services: Vec<&Value> = render
                .all("Service")
                .into_iter()
                .filter(|s| selects(&selector, &obj_strings(s.pointer("/metadata/labels"))))
                .collect();
            let [service] = services.as_slice() else {
                problems.push(format!(
                    "{label}: the ServiceMonitor selects {} Services, expected exactly one",
                    services.len()
                ));
                continue;
            };
            for endpoint in arr(monitor, "/spec/endpoints") {
                let path = str_at(endpoint, "/path").unwrap_or("/metrics");
                scraped.insert(path.to_owned());
                let port_name = str_at(endpoint, "/port");
                let target = arr(service, "/spec/ports")
                    .iter()
                    .find(|p| str_at(p, "/name") == port_name)
                    .and_then(|p| {
                        render.container_port(p.get("targetPort").unwrap_or(&Value::Null))
                    });
                if target != Some(admin_port) {
                    problems.push(format!(
                        "{label}: ServiceMonitor port {port_name:?} reaches container port {target:?}, not admin.port {admin_port}"
                    ));
                }
            }
        }
    }
    assert_no_problems("ServiceMonitor", &problems);
    assert!(
        !scraped.is_empty(),
        "no values file renders a ServiceMonitor, so this test proves nothing"
    );

    let mut server = start_server(local_render());
    server
        .wait_for_admin(LIVEZ, StatusCode::OK, Duration::from_secs(30))
        .await;
    let mut missing = String::new();
    for path in &scraped {
        if admin_status(&server, path).await == StatusCode::NOT_FOUND {
            let _ = write!(missing, " {path}");
        }
    }
    assert!(
        missing.is_empty(),
        "the chart's ServiceMonitor scrapes{missing} on the admin port, which the binary does not serve (404)"
    );
}

#[test]
fn every_pod_opts_out_of_service_link_variables() {
    // Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_…` for every Service in
    // the namespace; a Service named `tasks` would put them in the TASKS_ namespace the
    // configuration owns.
    let mut problems = Vec::new();
    for render in renders() {
        let label = &render.label;
        for (owner, spec) in render.pod_specs() {
            if spec.get("enableServiceLinks").and_then(Value::as_bool) != Some(false) {
                problems.push(format!("{label}: {owner}: enableServiceLinks is not false"));
            }
        }
    }
    assert_no_problems("service links", &problems);
}

#[test]
fn helm_test_runs_binary_subcommands_against_the_services_ports() {
    let mut problems = Vec::new();
    let mut tests_seen = 0;
    for render in renders() {
        let label = &render.label;
        let http_port = effective_config(render).u64("http.port");
        let admin_port = effective_config(render).u64("admin.port");
        for pod in render.all("Pod") {
            tests_seen += 1;
            let spec = pod.get("spec").unwrap_or(&Value::Null);
            let mut commands = Vec::new();
            for container in arr(spec, "/initContainers")
                .iter()
                .chain(arr(spec, "/containers"))
            {
                let args: Vec<&str> = arr(container, "/args")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let name = str_at(container, "/name").unwrap_or_default();
                let at = format!("{label}: test container {name}");
                let [subcommand, url, ..] = args.as_slice() else {
                    problems.push(format!("{at}: args {args:?} are not `SUBCOMMAND URL`"));
                    continue;
                };
                commands.push(*subcommand);
                let help = ServiceCommand::new(BIN, "TASKS")
                    .args([*subcommand, "--help"])
                    .output();
                if !help.success() {
                    problems.push(format!("{at}: the binary has no subcommand {subcommand}"));
                }
                // http://SERVICE:PORT[/path] must reach a rendered Service port whose target
                // is the listener the subcommand needs.
                let Some((service, port, path)) = url.strip_prefix("http://").and_then(|rest| {
                    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                    let (host, port) = authority.split_once(':')?;
                    Some((host, port.parse::<u64>().ok()?, format!("/{path}")))
                }) else {
                    problems.push(format!("{at}: {url} is not http://SERVICE:PORT[/path]"));
                    continue;
                };
                let Some(svc) = render.named("Service", service) else {
                    problems.push(format!("{at}: {url} names no rendered Service"));
                    continue;
                };
                let target = arr(svc, "/spec/ports")
                    .iter()
                    .find(|p| p.get("port").and_then(port_number) == Some(port))
                    .and_then(|p| p.get("targetPort"))
                    .and_then(|t| render.container_port(t));
                let want = if *subcommand == "round-trip" {
                    http_port
                } else {
                    admin_port
                };
                if target != Some(want) {
                    problems.push(format!(
                        "{at}: {url} reaches container port {target:?}, the listener it needs is {want}"
                    ));
                }
                if *subcommand == "probe" && path != READYZ {
                    problems.push(format!("{at}: probes {path}, not {READYZ}"));
                }
            }
            if !commands.contains(&"round-trip") {
                problems.push(format!(
                    "{label}: the Helm test makes no task round trip (commands {commands:?})"
                ));
            }
        }
    }
    assert_no_problems("helm test", &problems);
    assert!(tests_seen > 0, "no values file renders the Helm test pod");
}

#[test]
fn the_admin_listener_is_never_exposed_beyond_the_cluster() {
    // Whatever service.type exposes the API, /metrics and the probes stay on ClusterIP.
    let mut problems = Vec::new();
    let mut admin_services = 0;
    let exposed = render("local", CASES[0].1, &["service.type=LoadBalancer"]);
    for r in renders().iter().chain(std::iter::once(&exposed)) {
        let label = &r.label;
        let admin_port = effective_config(r).u64("admin.port");
        for service in r.all("Service") {
            let name = str_at(service, "/metadata/name").unwrap_or_default();
            let kind = str_at(service, "/spec/type").unwrap_or("ClusterIP");
            for port in arr(service, "/spec/ports") {
                let target = port.get("targetPort").and_then(|t| r.container_port(t));
                if target == Some(admin_port) {
                    admin_services += 1;
                    if kind != "ClusterIP" {
                        problems.push(format!(
                            "{label}: Service {name} ({kind}) exposes the admin port {admin_port}"
                        ));
                    }
                }
            }
        }
    }
    assert_no_problems("admin exposure", &problems);
    assert!(
        admin_services > 0,
        "no Service reaches the admin port at all"
    );
}
