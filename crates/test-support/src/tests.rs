use super::*;

fn sample() -> TestDatabase {
    TestDatabase {
        host: "127.0.0.1".to_owned(),
        port: 5433,
        name: "tasks_test_1_2_ab".to_owned(),
        user: "tasks_test".to_owned(),
        password: "p@ss:w/rd".to_owned(),
    }
}

#[test]
fn url_percent_encodes_credentials() {
    assert_eq!(
        sample().url(),
        "postgres://tasks_test:p%40ss%3Aw%2Frd@127.0.0.1:5433/tasks_test_1_2_ab"
    );
    // The URL round-trips through tokio-postgres's parser.
    let config = tokio_postgres::Config::from_str(&sample().url()).unwrap();
    assert_eq!(config.get_password(), Some("p@ss:w/rd".as_bytes()));
    assert_eq!(config.get_dbname(), Some("tasks_test_1_2_ab"));
}

#[test]
fn env_names_follow_the_config_crate() {
    let env = sample().env();
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("TASKS_DATABASE__HOST"), Some("127.0.0.1"));
    assert_eq!(get("TASKS_DATABASE__PORT"), Some("5433"));
    assert_eq!(get("TASKS_DATABASE__NAME"), Some("tasks_test_1_2_ab"));
    assert_eq!(get("TASKS_DATABASE__USER"), Some("tasks_test"));
    assert_eq!(get("TASKS_DATABASE__PASSWORD"), Some("p@ss:w/rd"));
    assert_eq!(env.len(), 5);
}

#[test]
fn env_for_another_prefix_names_the_same_database() {
    let env = sample().env_for("NOTES");
    assert_eq!(env.len(), 5);
    assert!(env.iter().all(|(k, _)| k.starts_with("NOTES_DATABASE__")));
    assert!(env.contains(&(
        "NOTES_DATABASE__NAME".to_owned(),
        "tasks_test_1_2_ab".to_owned()
    )));
}

#[test]
fn debug_redacts_the_password() {
    let text = format!("{:?}", sample());
    assert!(!text.contains("p@ss"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[test]
fn database_names_are_unique_valid_identifiers() {
    let a = unique_database_name();
    let b = unique_database_name();
    assert_ne!(a, b);
    for name in [&a, &b] {
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("tasks_test_"), "{name}");
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{name}"
        );
    }
}

#[test]
fn random_hex_has_the_requested_length() {
    let a = random_hex(32);
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, random_hex(32));
}

#[test]
fn external_server_from_url() {
    let server = TestServer::external("postgres://app:s%3Acret@db.example:6543/admin").unwrap();
    assert!(server.is_external());
    assert_eq!(server.host(), "db.example");
    assert_eq!(server.port(), 6543);
    assert_eq!(server.user(), "app");
    assert_eq!(server.password(), "s:cret");
    assert_eq!(
        server.admin_url(),
        "postgres://app:s%3Acret@db.example:6543/admin"
    );
    assert!(server.data_dir().is_none());
    assert!(!format!("{server:?}").contains("s:cret"));
}

#[test]
fn external_server_errors_do_not_echo_the_url() {
    let err = TestServer::external("postgres://app:secret@:bad-port/x").unwrap_err();
    assert!(!err.contains("secret"), "{err}");
    let err = TestServer::external("postgres://db.example/x").unwrap_err();
    assert!(err.contains("no user"), "{err}");
}

#[test]
#[should_panic(expected = "cannot stop the external test server")]
fn external_server_cannot_be_stopped() {
    TestServer::external("postgres://app:pw@localhost:5432/postgres")
        .unwrap()
        .stop();
}

#[test]
#[should_panic(expected = "cannot start the external test server")]
fn external_server_cannot_be_started() {
    TestServer::external("postgres://app:pw@localhost:5432/postgres")
        .unwrap()
        .start();
}
