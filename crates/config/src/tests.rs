use std::fs;

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Http {
    host: String,
    port: u16,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Prefer,
    VerifyFull,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Db {
    host: String,
    password: Option<Secret>,
    ca_file: Option<String>,
    mode: Mode,
    migrate: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Settings {
    http: Http,
    database: Db,
}

fn loader(env: &[(&str, &str)]) -> Loader {
    Loader::new("APP").with_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn load(env: &[(&str, &str)]) -> Result<Loaded<Settings>, ConfigErrors> {
    loader(env).load()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let loaded = load(&[]).unwrap();
    assert_eq!(loaded.value, Settings::default());
    assert_eq!(loaded.origin("http.port"), Origin::Default);
}

#[test]
fn environment_overrides_defaults_with_nesting() {
    let loaded = load(&[
        ("APP_HTTP__PORT", "9000"),
        ("APP_DATABASE__MODE", "verify-full"),
        ("APP_DATABASE__MIGRATE", "true"),
    ])
    .unwrap();
    assert_eq!(loaded.value.http.port, 9000);
    assert_eq!(loaded.value.database.mode, Mode::VerifyFull);
    assert!(loaded.value.database.migrate);
    assert_eq!(
        loaded.origin("http.port"),
        Origin::Env("APP_HTTP__PORT".into())
    );
}

#[test]
fn file_layer_sits_between_defaults_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    fs::write(&file, "[http]\nport = 7000\nhost = \"127.0.0.1\"\n").unwrap();
    let path = file.to_str().unwrap();
    let loaded = load(&[("APP_CONFIG_FILE", path), ("APP_HTTP__PORT", "7001")]).unwrap();
    assert_eq!(loaded.value.http.host, "127.0.0.1");
    assert_eq!(loaded.value.http.port, 7001);
    assert_eq!(loaded.origin("http.host"), Origin::File(file.clone()));
}

#[test]
fn secrets_dir_overrides_environment_and_skips_kubernetes_internals() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("database.password"), "from-dir\n").unwrap();
    fs::create_dir(dir.path().join("..2024_01_01")).unwrap();
    fs::write(dir.path().join("..data"), "ignored").unwrap();
    let secrets = dir.path().to_str().unwrap();
    let loaded = load(&[
        ("APP_SECRETS_DIR", secrets),
        ("APP_DATABASE__PASSWORD", "from-env"),
    ])
    .unwrap();
    assert_eq!(
        loaded.value.database.password.as_ref().unwrap().expose(),
        "from-dir"
    );
    let origin = loaded.origin("database.password");
    assert_eq!(
        origin.secret_path(),
        Some(dir.path().join("database.password").as_path())
    );
}

#[test]
fn only_one_trailing_newline_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("database.password"), "two\n\n").unwrap();
    let loaded = load(&[("APP_SECRETS_DIR", dir.path().to_str().unwrap())]).unwrap();
    assert_eq!(loaded.value.database.password.unwrap().expose(), "two\n");
}

#[test]
fn missing_secrets_dir_is_fine() {
    let loaded = Loader::new("APP")
        .default_secrets_dir("/nonexistent/secrets")
        .with_env(Vec::<(String, String)>::new())
        .load::<Settings>();
    assert!(loaded.is_ok());
}

#[test]
fn file_indirection_wins_over_secrets_dir() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("database.password"), "from-dir").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let single = elsewhere.path().join("pw");
    fs::write(&single, "from-file-var\n").unwrap();
    let loaded = load(&[
        ("APP_SECRETS_DIR", dir.path().to_str().unwrap()),
        ("APP_DATABASE__PASSWORD_FILE", single.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(
        loaded.value.database.password.as_ref().unwrap().expose(),
        "from-file-var"
    );
    assert_eq!(
        loaded.origin("database.password").secret_path(),
        Some(single.as_path())
    );
}

#[test]
fn keys_ending_in_file_are_plain_values() {
    let loaded = load(&[("APP_DATABASE__CA_FILE", "/etc/ca.pem")]).unwrap();
    assert_eq!(
        loaded.value.database.ca_file.as_deref(),
        Some("/etc/ca.pem")
    );
}

#[test]
fn type_errors_name_key_value_and_origin() {
    let err = load(&[("APP_HTTP__PORT", "abc")]).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(
        err.problems[0].to_string(),
        r#"http.port: expected an integer, got "abc" (from APP_HTTP__PORT)"#
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = load(&[
        ("APP_HTTP__PORT", "abc"),
        ("APP_DATABSE__HOST", "x"),
        ("APP_DATABASE__MIGRATE", "maybe"),
        ("APP_DATABASE__MODE", "sometimes"),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("http.port"), "{text}");
    assert!(
        text.contains("databse.host: unknown configuration key (from APP_DATABSE__HOST)"),
        "{text}"
    );
    assert!(text.contains("database.migrate"), "{text}");
    assert!(text.contains("database.mode"), "{text}");
    assert_eq!(err.problems.len(), 4, "{text}");
}

#[test]
fn unreadable_file_indirection_names_the_variable() {
    let err = load(&[("APP_DATABASE__PASSWORD_FILE", "/nonexistent/pw")]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("database.password"), "{text}");
    assert!(text.contains("/nonexistent/pw"), "{text}");
    assert!(text.contains("APP_DATABASE__PASSWORD_FILE"), "{text}");
}

#[test]
fn missing_config_file_is_reported() {
    let err = load(&[("APP_CONFIG_FILE", "/nonexistent/app.toml")]).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/app.toml"));
}

#[test]
fn malformed_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    fs::write(&file, "[http\nport = ").unwrap();
    let err = load(&[("APP_CONFIG_FILE", file.to_str().unwrap())]).unwrap_err();
    assert!(
        err.to_string().contains("cannot parse configuration file"),
        "{err}"
    );
}

#[test]
fn a_malformed_config_file_never_echoes_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    // An unterminated string on the password line: TOML's error quotes that line.
    fs::write(
        &file,
        "[database]\nhost = \"db\"\npassword = \"hunter2-very-secret\n",
    )
    .unwrap();
    let err = load(&[("APP_CONFIG_FILE", file.to_str().unwrap())]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot parse configuration file"), "{text}");
    assert!(text.contains("line 3"), "the position is kept: {text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn secrets_from_files_are_never_quoted_in_errors() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Numeric {
        pin: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("pin"), "S3cr3t-Value").unwrap();
    let err = Loader::new("APP")
        .with_env([("APP_SECRETS_DIR", dir.path().to_str().unwrap())])
        .load::<Numeric>()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("pin: expected an integer"), "{text}");
    assert!(!text.contains("S3cr3t-Value"), "{text}");
}

#[test]
fn secrets_are_redacted_everywhere() {
    let loaded = load(&[("APP_DATABASE__PASSWORD", "S3cr3t-Value")]).unwrap();
    let debug = format!("{:?}", loaded.value);
    let json = serde_json::to_string(&loaded.value).unwrap();
    let effective = format!("{:?}", loaded.effective());
    for text in [debug, json, effective] {
        assert!(!text.contains("S3cr3t-Value"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
    assert_eq!(
        loaded.value.database.password.unwrap().expose(),
        "S3cr3t-Value"
    );
}

#[test]
fn unrelated_variables_are_ignored() {
    assert!(load(&[("PATH", "/bin"), ("APPLE_PIE", "1")]).is_ok());
}

#[test]
fn unknown_enum_values_name_key_value_and_origin() {
    let err = load(&[("APP_DATABASE__MODE", "sometimes")]).unwrap_err();
    assert_eq!(
        err.problems[0].to_string(),
        r#"database.mode: invalid value "sometimes" (from APP_DATABASE__MODE)"#
    );
}

#[test]
fn service_rules_become_problems_naming_the_origin() {
    let loaded = load(&[("APP_HTTP__PORT", "81")]).expect("loads");
    let problems = vec![
        loaded.problem("http.port", "must be at least 1024"),
        loaded.problem("http.host", "must not be a wildcard"),
    ];
    let errors = loaded.reject_if_any(problems).expect_err("two problems");
    let text = errors.to_string();
    assert!(
        text.contains("http.port: must be at least 1024 (from APP_HTTP__PORT)"),
        "{text}"
    );
    // A default has no origin worth naming.
    assert!(text.contains("http.host: must not be a wildcard"), "{text}");
    assert!(!text.contains("wildcard (from"), "{text}");
}

#[test]
fn no_service_problems_keeps_the_loaded_value() {
    let loaded = load(&[])
        .expect("loads")
        .reject_if_any(Vec::new())
        .expect("no problems");
    assert_eq!(loaded.value.http.port, 8080);
}

#[test]
fn kubernetes_service_link_variables_are_not_configuration() {
    // What Kubernetes injects for Services named `app` and `app-db` in the namespace.
    let loaded = load(&[
        ("APP_SERVICE_HOST", "10.0.0.1"),
        ("APP_SERVICE_PORT", "8080"),
        ("APP_SERVICE_PORT_HTTP", "8080"),
        ("APP_PORT", "tcp://10.0.0.1:8080"),
        ("APP_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
        ("APP_PORT_8080_TCP_PROTO", "tcp"),
        ("APP_PORT_8080_TCP_PORT", "8080"),
        ("APP_PORT_8080_TCP_ADDR", "10.0.0.1"),
        ("APP_DB_SERVICE_HOST", "10.0.0.2"),
        ("APP_DB_PORT_5432_TCP_ADDR", "10.0.0.2"),
        ("APP_HTTP__PORT", "9000"),
    ])
    .expect("service links are ignored");
    assert_eq!(loaded.value.http.port, 9000);
}

#[test]
fn misspelt_keys_that_resemble_service_links_are_still_errors() {
    for var in [
        "APP_HTTP_PORT",
        "APP_DATABASE_PORT",
        "APP_PORT_HTTP",
        "APP_HTTP__PORTS",
        "APP_DATABASE__SERVICE_PORT",
        "APP_HTTP__SERVICE_HOST",
    ] {
        let errors = load(&[(var, "8080")]).expect_err(var);
        assert!(
            errors.to_string().contains(&format!("(from {var})")),
            "{var}: {errors}"
        );
    }
}
