//! Who may call the API and what each caller sees, through the whole service: bearer
//! credentials and RFC 6750 answers, scopes, API tokens revoked by editing their file,
//! tenant isolation (tasks, lists, idempotency keys), and the request-body defences of a
//! public API (compressed bodies, slow bodies). The token verification itself — JWTs
//! against a real local OIDC issuer, every refusal reason, key rotation, the issuer down —
//! is tested in `crates/auth/tests/auth.rs` through the same extractor.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasks_auth::{MintedToken, mint_api_token};
use tasks_test_support::fresh_database;
use tasks_test_support::http::{HttpClient, Method, StatusCode};
use tasks_test_support::poll::eventually;

use crate::support::{ProblemReply, TestApp, spawn_app, spawn_app_with};

/// The service with the harness's token plus `extra` tokens in its token file.
async fn app_with_tokens(extra: &[&MintedToken]) -> TestApp {
    let db = fresh_database().await;
    let lines: String = extra.iter().map(|t| format!("{}\n", t.line())).collect();
    spawn_app_with(&db, move |settings| {
        let mut all = settings
            .auth
            .api_tokens
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        all.push_str(&lines);
        settings.auth.api_tokens = Some(all.into());
    })
    .await
}

fn as_caller(app: &TestApp, token: &MintedToken) -> HttpClient {
    app.api.anonymous().with_bearer(token.token())
}

fn mint(principal: &str, scopes: &[&str]) -> MintedToken {
    mint_api_token(principal, scopes).expect("mint")
}

async fn create(api: &HttpClient, title: &str) -> Value {
    api.post_json("/v1/tasks", &json!({ "title": title }))
        .await
        .expect_json(StatusCode::CREATED)
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_with_a_bearer_challenge() {
    let app = spawn_app(&fresh_database().await).await;
    let anonymous = app.api.anonymous();

    let missing = anonymous.get("/v1/tasks").await;
    missing.expect_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="tasks""#),
        "no error code when no credentials were sent (RFC 6750 §3.1)"
    );

    for token in ["tkn_not-a-token", "not.a.jwt", "eyJhbGciOiJub25lIn0.e30."] {
        let refused = anonymous.clone().with_bearer(token).get("/v1/tasks").await;
        refused.expect_problem(StatusCode::UNAUTHORIZED);
        let challenge = refused.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer realm="tasks""#)
                && challenge.contains(r#"error="invalid_token""#),
            "{token}: {challenge}"
        );
        assert!(!refused.text().contains(token), "the token is never echoed");
    }

    // Every /v1 route and method, and before the body is looked at.
    let post = anonymous
        .post_raw("/v1/tasks", "application/json", "{not json")
        .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{post:?}");
    let id = uuid::Uuid::now_v7();
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let reply = anonymous
            .send(anonymous.request(method.clone(), &format!("/v1/tasks/{id}")))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method}: {reply:?}"
        );
    }
    // What stays open.
    anonymous
        .get("/openapi.json")
        .await
        .expect_status(StatusCode::OK);
    app.admin.get("/readyz").await.expect_status(StatusCode::OK);
}

#[tokio::test]
async fn a_token_without_the_write_scope_reads_but_gets_403_insufficient_scope_on_writes() {
    let reader = mint("auditor", &["tasks:read"]);
    let app = app_with_tokens(&[&reader]).await;
    let auditor = as_caller(&app, &reader);

    auditor.get("/v1/tasks").await.expect_status(StatusCode::OK);
    let refused = auditor
        .post_json("/v1/tasks", &json!({"title": "not allowed"}))
        .await;
    let problem = refused.expect_problem(StatusCode::FORBIDDEN);
    assert_eq!(problem["type"], "urn:problem-type:tasks:insufficient-scope");
    let challenge = refused.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#)
            && challenge.contains(r#"scope="tasks:write""#),
        "{challenge}"
    );
    assert_eq!(app.task_count().await, 0, "nothing was written");
}

#[tokio::test]
async fn an_api_token_removed_from_its_file_is_refused_without_a_restart() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("auth.api_tokens");
    let ci = mint("ci", &["tasks:read", "tasks:write"]);
    let kept = mint("kept", &["tasks:read"]);
    std::fs::write(&file, format!("{}\n{}\n", ci.line(), kept.line())).expect("write");
    let path = file.clone();
    let app = spawn_app_with(&db, move |settings| {
        settings.auth.api_tokens = None;
        settings.auth.api_tokens_file = Some(path);
    })
    .await;
    let ci_client = as_caller(&app, &ci);
    create(&ci_client, "before revocation").await;

    // Revoke: rewrite the file without the line (as a Secret update would).
    std::fs::write(&file, format!("# ci revoked\n{}\n", kept.line())).expect("rewrite");
    eventually(
        "the revoked token to be refused",
        Duration::from_secs(10),
        || {
            let ci_client = ci_client.clone();
            async move { ci_client.get("/v1/tasks").await.status == StatusCode::UNAUTHORIZED }
        },
    )
    .await;
    as_caller(&app, &kept)
        .get("/v1/tasks")
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn callers_see_and_change_only_their_own_tasks() {
    let bob_token = mint("bob", &["tasks:read", "tasks:write"]);
    let app = app_with_tokens(&[&bob_token]).await;
    let alice = &app.api;
    let bob = as_caller(&app, &bob_token);

    let task = create(alice, "alice's").await;
    let id = task["id"].as_str().expect("id");
    let path = format!("/v1/tasks/{id}");
    let etag = format!("\"{}\"", task["version"]);

    bob.get(&path).await.expect_problem(StatusCode::NOT_FOUND);
    bob.patch(
        &path,
        "application/merge-patch+json",
        &json!({"title": "bob's"}),
    )
    .await
    .expect_problem(StatusCode::NOT_FOUND);
    bob.send(
        bob.request(Method::PATCH, &path)
            .header("content-type", "application/merge-patch+json")
            .header("if-match", etag.as_str())
            .body(r#"{"title":"bob's"}"#),
    )
    .await
    .expect_problem(StatusCode::PRECONDITION_FAILED);
    bob.delete(&path)
        .await
        .expect_problem(StatusCode::NOT_FOUND);
    let bobs_list = bob.get("/v1/tasks").await.expect_json(StatusCode::OK);
    assert_eq!(bobs_list["items"], json!([]), "{bobs_list}");

    let unchanged = alice.get(&path).await.expect_json(StatusCode::OK);
    assert_eq!(unchanged, task, "nothing Bob did reached Alice's task");
    let alices_list = alice.get("/v1/tasks").await.expect_json(StatusCode::OK);
    assert_eq!(alices_list["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn one_idempotency_key_used_by_two_callers_gives_two_tasks_and_no_shared_replay() {
    let bob_token = mint("bob", &["tasks:read", "tasks:write"]);
    let app = app_with_tokens(&[&bob_token]).await;
    let bob = as_caller(&app, &bob_token);
    let post = |client: &HttpClient, title: &str| {
        client
            .request(Method::POST, "/v1/tasks")
            .header("content-type", "application/json")
            .header("idempotency-key", "same-key")
            .body(json!({ "title": title }).to_string())
    };

    let alices = app.api.send(post(&app.api, "same body")).await;
    let alices = alices.expect_json(StatusCode::CREATED);
    let bobs = bob.send(post(&bob, "same body")).await;
    assert_eq!(
        bobs.header("idempotent-replayed"),
        None,
        "Bob gets no replay of Alice's answer"
    );
    let bobs = bobs.expect_json(StatusCode::CREATED);
    assert_ne!(alices["id"], bobs["id"]);
    assert_eq!(app.task_count().await, 2);

    let replayed = app.api.send(post(&app.api, "same body")).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replayed.expect_json(StatusCode::CREATED)["id"],
        alices["id"]
    );
}

#[tokio::test]
async fn if_match_on_a_task_that_does_not_exist_is_412() {
    let app = spawn_app(&fresh_database().await).await;
    let path = format!("/v1/tasks/{}", uuid::Uuid::now_v7());
    let delete = app
        .api
        .send(
            app.api
                .request(Method::DELETE, &path)
                .header("if-match", "*"),
        )
        .await;
    delete.expect_problem(StatusCode::PRECONDITION_FAILED);
    let patch = app
        .api
        .send(
            app.api
                .request(Method::PATCH, &path)
                .header("content-type", "application/merge-patch+json")
                .header("if-match", "\"1\"")
                .body(r#"{"title":"x"}"#),
        )
        .await;
    patch.expect_problem(StatusCode::PRECONDITION_FAILED);
    // Without If-Match, a missing task is still a 404.
    app.api
        .delete(&path)
        .await
        .expect_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_compressed_bomb_is_refused_without_being_inflated() {
    use flate2::Compression;
    use flate2::write::GzEncoder;

    let app = spawn_app(&fresh_database().await).await;
    // 64 MiB of JSON whitespace around a title: about 64 KiB once gzipped.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(br#"{"title":"bomb""#).expect("gzip");
    let padding = vec![b' '; 1 << 20];
    for _ in 0..64 {
        encoder.write_all(&padding).expect("gzip");
    }
    encoder.write_all(b"}").expect("gzip");
    let bomb = encoder.finish().expect("gzip");
    assert!(
        bomb.len() < 1 << 20,
        "the bomb is small on the wire: {}",
        bomb.len()
    );

    for encoding in ["gzip", "deflate", "br"] {
        let reply = app
            .api
            .send(
                app.api
                    .request(Method::POST, "/v1/tasks")
                    .header("content-type", "application/json")
                    .header("content-encoding", encoding)
                    .body(bomb.clone()),
            )
            .await;
        reply.expect_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            reply.header("accept-encoding"),
            Some("identity"),
            "{encoding}"
        );
    }
    assert_eq!(app.task_count().await, 0);
    app.admin.get("/readyz").await.expect_status(StatusCode::OK);
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_within_the_deadline() {
    let db = fresh_database().await;
    let app = spawn_app_with(&db, |settings| settings.http.body_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(app.api.authority()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"ti",
        app.api.authority(),
        app.token
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).expect("send the head");
    // The rest of the body never comes.
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {elapsed:?}: {answer}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "the worker was held for {elapsed:?}, not about the 500 ms deadline"
    );
    assert_eq!(app.task_count().await, 0);
}

#[tokio::test]
async fn the_round_trip_subcommand_authenticates_with_a_token_file() {
    let app = spawn_app(&fresh_database().await).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", app.token)).expect("write");
    let base = app.api.base().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::BIN)
            .args(["round-trip", &base, "--token-file"])
            .arg(&token_file)
            .output()
            .expect("run round-trip")
    })
    .await
    .expect("join");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        app.task_count().await,
        0,
        "the round trip leaves nothing behind"
    );

    let base = app.api.base().to_owned();
    let anonymous = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::BIN)
            .args(["round-trip", &base])
            .output()
            .expect("run round-trip")
    })
    .await
    .expect("join");
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("401"),
        "{anonymous:?}"
    );
}

#[tokio::test]
async fn token_material_never_reaches_logs_metrics_or_check_config() {
    let db = fresh_database().await;
    let token = mint("observed", &["tasks:read", "tasks:write"]);
    let hash = token
        .line()
        .split_whitespace()
        .nth(1)
        .expect("the line names the hash")
        .to_owned();
    let with_token = || {
        crate::support::tasks_command()
            .envs(db.env())
            .secret_file("auth.api_tokens", format!("{}\n", token.line()))
    };
    let mut service = with_token().bearer_token(token.token()).spawn();
    service.wait_ready().await;
    create(service.api(), "observed").await;
    let bogus = "tkn_bogus-value-that-must-not-be-logged";
    let refused = service
        .api()
        .anonymous()
        .with_bearer(bogus)
        .get("/v1/tasks")
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let metrics = service.admin().get("/metrics").await.text();
    service.sigterm();
    service.wait_exit(Duration::from_secs(30)).await;
    let log = service.log();
    assert!(
        log.contains("\"status\":401"),
        "the refusal is logged: {log}"
    );
    for secret in [token.token(), hash.as_str(), bogus] {
        assert!(!log.contains(secret), "log holds token material");
        assert!(!metrics.contains(secret), "metrics hold token material");
    }

    let checked = with_token().arg("check-config").output();
    assert!(checked.success(), "{}", checked.text());
    let text = checked.text();
    assert!(
        !text.contains(token.token()) && !text.contains(&hash),
        "{text}"
    );
    assert!(text.contains("auth.api_tokens = \"[REDACTED]\""), "{text}");
}

#[tokio::test]
async fn authentication_turned_off_explicitly_is_announced_in_readyz() {
    let db = fresh_database().await;
    let app = spawn_app_with(&db, |settings| {
        settings.auth.enabled = false;
        settings.auth.api_tokens = None;
    })
    .await;
    let ready = app.admin.get("/readyz").await.expect_json(StatusCode::OK);
    let detail = ready["checks"]["authentication"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("auth.enabled=false"), "{ready}");
    // And it is really off: an anonymous caller gets in.
    app.api
        .anonymous()
        .get("/v1/tasks")
        .await
        .expect_status(StatusCode::OK);
}
