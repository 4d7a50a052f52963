//! Configuration through the real binary: every source honoured, every problem named,
//! secrets never printed.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Output};

const SECRET: &str = "S3cr3t-Value";

fn check_config(env: &[(&str, &str)]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasks-server"));
    cmd.arg("check-config");
    for (key, _) in std::env::vars() {
        if key.starts_with("TASKS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TASKS_SECRETS_DIR", empty.path());
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn password_from_environment_is_honoured_and_redacted() {
    let out = check_config(&[("TASKS_DATABASE__PASSWORD", SECRET)]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
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
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
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
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
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
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let all = text(&out);
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
    assert_eq!(out.status.code(), Some(2));
    let all = text(&out);
    assert!(
        all.contains("http.port: must be between 1 and 65535 (from TASKS_HTTP__PORT)"),
        "{all}"
    );
    assert!(all.contains("/nonexistent/ca.pem"), "{all}");
}

#[test]
fn serve_refuses_to_start_on_bad_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_tasks-server"))
        .env("TASKS_SECRETS_DIR", tempfile::tempdir().unwrap().path())
        .env("TASKS_HTTP__WORKERS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("http.workers"));
}

#[test]
fn version_names_the_git_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_tasks-server"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("tasks-server {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

#[test]
fn probe_exits_non_zero_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_tasks-server"))
        .args([
            "probe",
            &format!("http://127.0.0.1:{port}/livez"),
            "--timeout-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_bad_rust_log_is_named_as_rust_log_not_log_level() {
    let out = check_config(&[("RUST_LOG", "info,[[[")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("(from RUST_LOG)"), "{all}");
    assert!(!all.contains("log.level"), "{all}");
}

#[test]
fn an_unsupported_otlp_protocol_is_a_configuration_problem() {
    let out = check_config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported"),
        "{all}"
    );
}
