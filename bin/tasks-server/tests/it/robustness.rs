//! Robustness of the service against hostile or broken input (docs/architecture.md §4 and
//! §5: no input, however malformed, yields a 5xx or a hang), the service in-process. Run
//! by `just test-robustness` next to the schemathesis run of `scripts/test-robustness.sh`.
//! They are `#[ignore]`d so `just test-rust` does not run them a second time:
//! `cargo test -p tasks-server --test it robustness:: -- --include-ignored`.
//!
//! Byte-exact round trips, invalid UTF-8, `limit` bounds and database outages are tested
//! once, in `api`.
//! The raw TCP streams here are the point of these tests (bodies larger than declared,
//! chunked uploads, heads that never end): no HTTP client sends those.

use std::time::{Duration, Instant};

use serde_json::json;
use tasks_test_support::fresh_database;
use tasks_test_support::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ProblemReply, TestApp, spawn_app, spawn_app_with};

/// The service's default body limit (`http.max_body_bytes`).
const MAX_BODY: usize = 65_536;

async fn app() -> TestApp {
    spawn_app(&fresh_database().await).await
}

/// Reads what the server answers until a complete problem document (head and a body
/// ending in `}`), the end of the stream, or `idle` without a byte; returns the bytes and
/// when the status line arrived (relative to `started`).
async fn read_answer(
    reader: &mut (impl AsyncRead + Unpin),
    idle: Duration,
    started: Instant,
) -> (String, Option<Duration>) {
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut status_line_at = None;
    while let Ok(Ok(n)) = tokio::time::timeout(idle, reader.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if status_line_at.is_none() && answer.windows(2).any(|w| w == b"\r\n") {
            status_line_at = Some(started.elapsed());
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        status_line_at,
    )
}

/// Sends a request head declaring `declared` body bytes, then streams `declared` bytes
/// (or stops when the server hangs up) while reading the answer. Returns the status
/// line, the whole answer read so far, and how long the status line took.
async fn oversized_upload(app: &TestApp, declared: usize) -> (String, String, Duration) {
    let stream = TcpStream::connect(app.api.authority())
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n",
        app.token
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
    let (text, elapsed) = read_answer(&mut reader, Duration::from_secs(10), started).await;
    upload.abort();
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
    let app = app().await;
    for size in [1 << 20, 10 << 20] {
        let (status, answer, elapsed) = oversized_upload(&app, size).await;
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
    // Through an ordinary client too, one byte over the default limit.
    app.api
        .post_raw("/v1/tasks", "application/json", vec![b' '; MAX_BODY + 1])
        .await
        .expect_problem(StatusCode::PAYLOAD_TOO_LARGE);
    // The service is unharmed.
    app.api.get("/v1/tasks").await.expect_status(StatusCode::OK);
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let app = app().await;
    let stream = TcpStream::connect(app.api.authority())
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let head = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.token
    );
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!("8000\r\n{}\r\n", " ".repeat(0x8000));
        // 2 MB in 32 KiB chunks, unless the server hangs up first.
        for _ in 0..64 {
            writer.write_all(chunk.as_bytes()).await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let (text, _) = read_answer(&mut reader, Duration::from_secs(5), started).await;
    upload.abort();
    assert!(text.starts_with("HTTP/1.1 413"), "answer {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn deeply_nested_json_is_rejected_without_harm() {
    let app = app().await;
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        // Just under the body limit, far over any parser's recursion limit.
        let depth = (MAX_BODY - 64) / (open.len() + close.len());
        let body = format!(
            "{{\"title\": {}1{}}}",
            open.repeat(depth),
            close.repeat(depth)
        );
        assert!(body.len() <= MAX_BODY);
        let reply = app
            .api
            .post_raw("/v1/tasks", "application/json", body)
            .await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST
                || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
            "nesting with {open:?}: {reply:?}"
        );
        reply.expect_problem(reply.status);
    }
    // Nested but shallow JSON in a string-typed field is a validation error.
    app.api
        .post_json("/v1/tasks", &json!({"title": {"a": [[[[1]]]]}}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY);
    app.api.get("/v1/tasks").await.expect_status(StatusCode::OK);
}

#[tokio::test]
#[ignore = "run by `just test-robustness`"]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    // actix measures the deadline from a clock it refreshes every 500 ms, so the
    // effective timeout lies between (timeout - 500 ms) and the timeout.
    let app = spawn_app_with(&fresh_database().await, |s| {
        s.http.client_timeout_ms = 1500;
    })
    .await;
    // Half a request head, then silence.
    let mut silent = TcpStream::connect(app.api.authority())
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
    let mut trickle = TcpStream::connect(app.api.authority())
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
    app.api.get("/v1/tasks").await.expect_status(StatusCode::OK);
}
