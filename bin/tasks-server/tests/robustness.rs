//! Robustness of the real `tasks-server` binary against hostile or broken input and a
//! failing database (docs/architecture.md §4 and §5: no input, however malformed, yields
//! a 5xx or a hang). Run by `just test-robustness` next to the schemathesis run of
//! `scripts/test-robustness.sh`. They are `#[ignore]`d so `just test-rust` does not run
//! them a second time: `cargo test -p tasks-server --test robustness -- --include-ignored`.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The service's default body limit (`http.max_body_bytes`).
const MAX_BODY: usize = 65_536;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Asserts a problem document with `status`.
#[track_caller]
fn assert_problem(status: StatusCode, content_type: &str, body: &[u8], expected: StatusCode) {
    assert_eq!(
        status,
        expected,
        "body: {}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?} for {status}"
    );
    let problem: Value = serde_json::from_slice(body).expect("problem body is JSON");
    assert_eq!(problem["status"], json!(expected.as_u16()), "{problem}");
}

async fn post_raw(server: &Server, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}/v1/tasks", server.api))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /v1/tasks")
}

async fn parts(response: reqwest::Response) -> (StatusCode, String, Vec<u8>) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.bytes().await.expect("response body").to_vec();
    (status, content_type, body)
}

/// Sends a request head declaring `declared` body bytes, then streams `declared` bytes
/// (or stops when the server hangs up) while reading the answer. Returns the status
/// line, the whole answer read so far, and how long the status line took.
async fn oversized_upload(base: &str, declared: usize) -> (String, String, Duration) {
    let stream = TcpStream::connect(host_port(base)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    let started = Instant::now();
    writer.write_all(head.as_bytes()).await.expect("send head");
    let upload = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < declared {
            let n = chunk.len().min(declared - sent);
            if writer.write_all(&chunk[..n]).await.is_err() {
                break; // the server hung up: fine
            }
            sent += n;
        }
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut elapsed = None;
    let deadline = Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout(deadline, reader.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if elapsed.is_none() && answer.windows(2).any(|w| w == b"\r\n") {
            elapsed = Some(started.elapsed());
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    upload.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    (
        status_line,
        text,
        elapsed.unwrap_or_else(|| started.elapsed()),
    )
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn one_and_ten_megabyte_bodies_are_refused_with_413_quickly() {
    let server = Server::start(&[]).await;
    for size in [1 << 20, 10 << 20] {
        let (status, answer, elapsed) = oversized_upload(&server.api, size).await;
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "{size} bytes: status line {status:?}; answer {answer:?}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("application/problem+json"),
            "{size} bytes: not a problem document: {answer:?}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "{size} bytes: 413 took {elapsed:?}"
        );
    }
    // Through an ordinary client too, and one byte over the limit.
    let (status, content_type, body) =
        parts(post_raw(&server, "application/json", vec![b' '; MAX_BODY + 1]).await).await;
    assert_problem(status, &content_type, &body, StatusCode::PAYLOAD_TOO_LARGE);
    // The server is unharmed.
    let response = client()
        .get(format!("{}/v1/tasks", server.api))
        .send()
        .await
        .expect("list after the uploads");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let server = Server::start(&[]).await;
    let stream = TcpStream::connect(host_port(&server.api))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let upload = tokio::spawn(async move {
        let head = "POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!("8000\r\n{}\r\n", " ".repeat(0x8000));
        // 2 MB in 32 KiB chunks, unless the server hangs up first.
        for _ in 0..64 {
            writer.write_all(chunk.as_bytes()).await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    upload.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "answer {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn invalid_utf8_is_a_400_problem() {
    let server = Server::start(&[]).await;
    for body in [
        b"\xff\xfe\xfd".to_vec(),
        b"{\"title\": \"caf\xe9\"}".to_vec(),
        b"{\"title\": \"\xed\xa0\x80 lone surrogate\"}".to_vec(),
        b"{\"title\": \"\\ud800 escaped lone surrogate\"}".to_vec(),
    ] {
        let (status, content_type, reply) =
            parts(post_raw(&server, "application/json", body.clone()).await).await;
        assert!(!status.is_server_error(), "{body:?} -> {status}: {reply:?}");
        assert_problem(status, &content_type, &reply, StatusCode::BAD_REQUEST);
    }
    // Invalid UTF-8 in a query string and a path is rejected, not a crash.
    for path in [
        "/v1/tasks?status=%ff%fe",
        "/v1/tasks/%ff%fe",
        "/v1/tasks?limit=%C0%AF",
    ] {
        let response = client()
            .get(format!("{}{path}", server.api))
            .send()
            .await
            .expect("GET");
        let (status, content_type, reply) = parts(response).await;
        assert!(
            status.is_client_error(),
            "{path} -> {status}: {}",
            String::from_utf8_lossy(&reply)
        );
        assert!(
            content_type.starts_with("application/problem+json"),
            "{path}"
        );
    }
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn deeply_nested_json_is_rejected_without_harm() {
    let server = Server::start(&[]).await;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        // Just under the body limit, far over any parser's recursion limit.
        let depth = (MAX_BODY - 64) / (open.len() + close.len());
        let body = format!(
            "{{\"title\": {}1{}}}",
            open.repeat(depth),
            close.repeat(depth)
        );
        assert!(body.len() <= MAX_BODY);
        let (status, content_type, reply) =
            parts(post_raw(&server, "application/json", body.into_bytes()).await).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "nesting with {open:?} -> {status}: {}",
            String::from_utf8_lossy(&reply)
        );
        assert!(content_type.starts_with("application/problem+json"));
    }
    // Nested but shallow JSON in a string-typed field is a validation error.
    let body = json!({"title": {"a": [[[[1]]]]}}).to_string();
    let (status, content_type, reply) =
        parts(post_raw(&server, "application/json", body.into_bytes()).await).await;
    assert_problem(
        status,
        &content_type,
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let alive = client()
        .get(format!("{}/v1/tasks", server.api))
        .send()
        .await
        .expect("server still answers");
    assert_eq!(alive.status(), StatusCode::OK);
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn limit_out_of_range_or_malformed_is_a_400_problem() {
    let server = Server::start(&[]).await;
    for limit in [
        "0",
        "-1",
        "-9223372036854775808",
        "101",
        "4294967297",
        "99999999999999999999999999999999",
        "1e3",
        "1.5",
        "abc",
        "",
        "%00",
        "+5",
    ] {
        let response = client()
            .get(format!("{}/v1/tasks?limit={limit}", server.api))
            .send()
            .await
            .expect("GET /v1/tasks");
        let (status, content_type, body) = parts(response).await;
        // "+5" and "" may reasonably be accepted or refused; everything else is refused.
        if (limit == "+5" || limit.is_empty()) && status == StatusCode::OK {
            continue;
        }
        assert_problem(status, &content_type, &body, StatusCode::BAD_REQUEST);
    }
    for limit in ["1", "100"] {
        let response = client()
            .get(format!("{}/v1/tasks?limit={limit}", server.api))
            .send()
            .await
            .expect("GET /v1/tasks");
        assert_eq!(response.status(), StatusCode::OK, "limit={limit}");
        let page: Value = response.json().await.expect("page JSON");
        assert!(page["items"].is_array());
    }
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn unicode_and_sql_metacharacters_round_trip_byte_for_byte() {
    let server = Server::start(&[]).await;
    let titles = [
        "مرحبا بالعالم — שלום עולם",             // RTL scripts
        "\u{202E}txt.exe\u{202C} bidi override", // explicit bidi controls
        "👩‍👩‍👧‍👦 family, 🇩🇪 flag, 🙂 smile",          // ZWJ sequences, flags
        "e\u{301} combining vs é precomposed",   // normalization must not happen
        "'; DROP TABLE tasks; --",               // SQL metacharacters
        "Robert'); DELETE FROM tasks WHERE ('1'='1",
        "100% _under_ \\backslash\\ $1 $$dollar$$ ::uuid",
        "\"quoted\" <tag> &amp; {json} [array] \t tab",
        "\u{feff}BOM, \u{200b}zero width, \u{fffd} replacement",
        "𝕳𝖊𝖑𝖑𝖔 𝟙𝟚𝟛 astral plane",
    ];
    let http = client();
    for title in titles {
        let description = format!("{title}\nsecond line\r\nthird ☃");
        let response = http
            .post(format!("{}/v1/tasks", server.api))
            .json(&json!({"title": title, "description": description}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::CREATED, "{title:?}");
        let created: Value = response.json().await.expect("created JSON");
        assert_eq!(created["title"].as_str(), Some(title), "POST echo");
        let id = created["id"].as_str().expect("id").to_owned();
        let fetched: Value = http
            .get(format!("{}/v1/tasks/{id}", server.api))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("task JSON");
        assert_eq!(fetched["title"].as_str(), Some(title), "GET {title:?}");
        assert_eq!(
            fetched["description"].as_str(),
            Some(description.as_str()),
            "GET description"
        );
        assert_eq!(
            fetched["title"].as_str().map(str::as_bytes),
            Some(title.as_bytes())
        );
    }
    // Limits count characters, not bytes: 200 four-byte emoji are a valid title,
    // 10,000 a valid description; one more is refused.
    let ok = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&json!({"title": "🙂".repeat(200), "description": "🙂".repeat(10_000)}))
        .send()
        .await
        .expect("POST");
    assert_eq!(ok.status(), StatusCode::CREATED);
    let created: Value = ok.json().await.expect("JSON");
    assert_eq!(
        created["description"].as_str(),
        Some("🙂".repeat(10_000).as_str())
    );
    let too_long = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&json!({"title": "🙂".repeat(201)}))
        .send()
        .await
        .expect("POST");
    assert_eq!(too_long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // PostgreSQL text cannot hold NUL: a validation error, never a 500.
    let nul = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&json!({"title": "nul \u{0} inside"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(nul.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Metacharacters in query parameters and ids are inert.
    for path in [
        "/v1/tasks?status=todo'%20OR%20'1'='1",
        "/v1/tasks?cursor=';--",
        "/v1/tasks/1'%20OR%20'1'='1",
    ] {
        let response = http
            .get(format!("{}{path}", server.api))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let count: Value = http
        .get(format!("{}/v1/tasks?limit=100", server.api))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("page");
    assert_eq!(
        count["items"].as_array().map(Vec::len),
        Some(titles.len() + 1)
    );
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    // actix measures the deadline from a clock it refreshes every 500 ms, so the
    // effective timeout lies between (timeout - 500 ms) and the timeout.
    let server = Server::start(&[("TASKS_HTTP__CLIENT_TIMEOUT_MS", "1500")]).await;
    // Half a request head, then silence.
    let mut silent = TcpStream::connect(host_port(&server.api))
        .await
        .expect("connect");
    let started = Instant::now();
    silent
        .write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("send half a head");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut answer)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_ok(),
        "connection still open after 5 s (client_timeout_ms = 1500)"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}, expected 1-1.5 s: {read:?} {:?}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer {text:?}"
    );

    // A trickling client (one byte every 100 ms, 9 s in all) is cut off too: the timeout bounds the
    // whole head, not the gaps between bytes.
    let mut trickle = TcpStream::connect(host_port(&server.api))
        .await
        .expect("connect");
    let started = Instant::now();
    let head = b"GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut probe = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut probe)).await
        {
            // EOF or a 408: the server gave up on us.
            assert!(
                n == 0 || probe.starts_with(b"HTTP/1.1 408"),
                "unexpected answer {:?}",
                String::from_utf8_lossy(&probe[..n])
            );
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "a trickling head was served after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Well-behaved clients are unaffected.
    let response = client()
        .get(format!("{}/v1/tasks", server.api))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn database_outage_gives_fast_503s_and_recovers_without_restart() {
    let postgres = tasks_test_support::private_server();
    let db = postgres.fresh_database().await;
    let mut server = Server::spawn(
        db,
        &[
            ("TASKS_DATABASE__POOL_TIMEOUT_MS", "1000"),
            ("TASKS_DATABASE__CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    server.wait_ready().await;
    let http = client();
    let created: Value = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&json!({"title": "survives the outage"}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();

    postgres.stop();
    let budget = Duration::from_millis(1000 + 1000);
    for (method, path, body) in [
        ("GET", format!("/v1/tasks/{id}"), None),
        ("GET", "/v1/tasks".to_owned(), None),
        ("POST", "/v1/tasks".to_owned(), Some(json!({"title": "x"}))),
        ("GET", format!("/v1/tasks/{id}"), None),
    ] {
        let started = Instant::now();
        let mut request = http.request(
            method.parse().expect("method"),
            format!("{}{path}", server.api),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, content_type, reply) =
            parts(request.send().await.expect("the API answers")).await;
        let elapsed = started.elapsed();
        assert_problem(
            status,
            &content_type,
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
        );
        assert!(
            elapsed < budget,
            "{method} {path}: 503 took {elapsed:?} (pool timeout 1 s)"
        );
    }
    // Liveness holds (no restarts for a database outage); readiness fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http
            .get(format!("{}/readyz", server.admin))
            .send()
            .await
            .expect("readyz");
        if ready.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness still {}",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let live = http
        .get(format!("{}/livez", server.admin))
        .send()
        .await
        .expect("livez");
    assert_eq!(live.status(), StatusCode::OK);

    postgres.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = http
            .get(format!("{}/v1/tasks/{id}", server.api))
            .send()
            .await
            .expect("GET");
        if response.status() == StatusCode::OK {
            let task: Value = response.json().await.expect("JSON");
            assert_eq!(task["title"], json!("survives the outage"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 20 s: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http
            .get(format!("{}/readyz", server.admin))
            .send()
            .await
            .expect("readyz");
        if ready.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness not back: {}",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = http
        .post(format!("{}/v1/tasks", server.api))
        .json(&json!({"title": "after the outage"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the server restarted"
    );
}
