//! Configuration through the real binary: every source honoured, every problem named,
//! secrets never printed.

use tasks_test_support::process::{RunOutput, ServiceCommand, closed_port};

use crate::support::{BIN, test_token};

const SECRET: &str = "S3cr3t-Value";

/// The binary with every `TASKS_*`/`OTEL_*` variable of the test process removed, an
/// empty secrets directory and an API-token file (authentication needs something to
/// authenticate with).
fn tasks_server() -> ServiceCommand {
    ServiceCommand::new(BIN, "TASKS").env_file(
        "TASKS_AUTH__API_TOKENS_FILE",
        format!("{}\n", test_token().line()),
    )
}

fn check_config(env: &[(&str, &str)]) -> RunOutput {
    tasks_server()
        .arg("check-config")
        .envs(env.iter().copied())
        .output()
}

#[test]
fn password_from_environment_is_honoured_and_redacted() {
    let out = check_config(&[("TASKS_DATABASE__PASSWORD", SECRET)]);
    assert!(out.success(), "{}", out.text());
    let all = out.text();
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        all.contains("database.password = \"[REDACTED]\"  # TASKS_DATABASE__PASSWORD"),
        "{all}"
    );
}

#[test]
fn password_from_secrets_dir_is_honoured_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("database.password");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = check_config(&[("TASKS_SECRETS_DIR", dir.path().to_str().unwrap())]);
    assert!(out.success(), "{}", out.text());
    let all = out.text();
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        all.contains(&format!(
            "database.password = \"[REDACTED]\"  # secret file {}",
            file.display()
        )),
        "{all}"
    );
}

#[test]
fn password_from_file_variable_is_honoured_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, SECRET).unwrap();
    let out = check_config(&[("TASKS_DATABASE__PASSWORD_FILE", file.to_str().unwrap())]);
    assert!(out.success(), "{}", out.text());
    let all = out.text();
    assert!(!all.contains(SECRET), "{all}");
    assert!(all.contains("# TASKS_DATABASE__PASSWORD_FILE="), "{all}");
}

#[test]
fn bad_values_and_unknown_keys_are_all_named() {
    let out = check_config(&[
        ("TASKS_HTTP__PORT", "abc"),
        ("TASKS_DATABSE__HOST", "x"),
        ("TASKS_DATABASE__SSLMODE", "sometimes"),
        ("TASKS_DATABASE__PASSWORD", SECRET),
    ]);
    assert_eq!(out.code(), Some(2), "{}", out.text());
    let all = out.text();
    assert!(
        all.contains(r#"http.port: expected an integer, got "abc" (from TASKS_HTTP__PORT)"#),
        "{all}"
    );
    assert!(
        all.contains("databse.host: unknown configuration key (from TASKS_DATABSE__HOST)"),
        "{all}"
    );
    assert!(
        all.contains("database.sslmode") && all.contains("TASKS_DATABASE__SSLMODE"),
        "{all}"
    );
    assert!(!all.contains(SECRET), "{all}");
}

#[test]
fn semantic_problems_are_reported_with_their_source() {
    let out = check_config(&[
        ("TASKS_HTTP__PORT", "0"),
        ("TASKS_DATABASE__SSLMODE", "verify-full"),
        ("TASKS_DATABASE__CA_FILE", "/nonexistent/ca.pem"),
    ]);
    assert_eq!(out.code(), Some(2));
    let all = out.text();
    assert!(
        all.contains("http.port: must be between 1 and 65535 (from TASKS_HTTP__PORT)"),
        "{all}"
    );
    assert!(all.contains("/nonexistent/ca.pem"), "{all}");
}

#[test]
fn serve_refuses_to_start_on_bad_configuration() {
    let out = tasks_server().env("TASKS_HTTP__WORKERS", "many").output();
    assert_eq!(out.code(), Some(2), "{}", out.report());
    assert!(out.text().contains("http.workers"));
}

#[test]
fn version_names_the_git_revision() {
    let out = tasks_server().arg("--version").output();
    let version = &out.stdout;
    assert!(
        version.starts_with(&format!("tasks-server {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

#[test]
fn probe_exits_non_zero_when_nothing_listens() {
    let port = closed_port();
    let out = tasks_server()
        .args([
            "probe",
            &format!("http://127.0.0.1:{port}/livez"),
            "--timeout-secs",
            "1",
        ])
        .output();
    assert!(!out.success(), "{}", out.report());
}

#[test]
fn a_bad_rust_log_is_named_as_rust_log_not_log_level() {
    let out = check_config(&[("RUST_LOG", "info,[[[")]);
    let all = out.text();
    assert_eq!(out.code(), Some(2), "{all}");
    assert!(all.contains("(from RUST_LOG)"), "{all}");
    assert!(!all.contains("log.level"), "{all}");
}

#[test]
fn an_unsupported_otlp_protocol_is_a_configuration_problem() {
    let out = check_config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
    let all = out.text();
    assert_eq!(out.code(), Some(2), "{all}");
    assert!(
        all.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported"),
        "{all}"
    );
}
