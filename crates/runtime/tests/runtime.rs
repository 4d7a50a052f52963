//! The service skeleton, run in-process: bound ports, the drain's order, bind errors.

use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, web};
use tasks_health::shutdown::ShutdownSettings;
use tasks_runtime::{ApiOptions, ListenerSettings, RuntimeError, Service};
use tasks_test_support::http::HttpClient;
use tasks_test_support::poll::eventually;

const WITHIN: Duration = Duration::from_secs(10);

#[actix_web::test]
async fn a_stop_request_fails_readiness_first_then_closes_the_api_then_the_admin_listener() {
    let shutdown = ShutdownSettings {
        drain_delay_secs: 1,
        timeout_secs: 1,
    };
    let mut service = Service::new(shutdown).handle_signals(false);
    let api = service
        .serve_api(
            || App::new().route("/hello", web::get().to(HttpResponse::Ok)),
            &ListenerSettings::loopback(0),
            ApiOptions {
                workers: 1,
                ..ApiOptions::default()
            },
        )
        .expect("bind API");
    let admin = service
        .serve_admin(&ListenerSettings::loopback(0))
        .expect("bind admin");
    assert_ne!(api.port(), 0);
    assert_ne!(admin.port(), 0);
    let stop = service.stop_handle();
    let running = actix_web::rt::spawn(service.run_until_stopped());

    let (api, admin) = (
        HttpClient::new(format!("http://{api}")),
        HttpClient::new(format!("http://{admin}")),
    );
    let status = |client: &HttpClient, path: &'static str| {
        let client = client.clone();
        async move { client.status(path).await.map(|status| status.as_u16()) }
    };
    eventually("the API to answer", WITHIN, || async {
        status(&api, "/hello").await == Some(200)
    })
    .await;
    assert_eq!(
        status(&admin, "/readyz").await,
        Some(200),
        "ready before the stop"
    );
    assert_eq!(status(&admin, "/metrics").await, Some(200));

    stop.stop();
    eventually("readiness to fail", WITHIN, || async {
        status(&admin, "/readyz").await == Some(503)
    })
    .await;
    assert_eq!(
        status(&api, "/hello").await,
        Some(200),
        "the API keeps serving during the drain delay"
    );
    running
        .await
        .expect("task")
        .expect("a requested stop is a clean stop");
    assert_eq!(
        status(&api, "/hello").await,
        None,
        "the API listener is closed"
    );
    assert_eq!(
        status(&admin, "/readyz").await,
        None,
        "the admin listener is closed"
    );
}

#[actix_web::test]
async fn a_second_stop_request_skips_the_rest_of_the_drain_delay() {
    let shutdown = ShutdownSettings {
        drain_delay_secs: 60,
        timeout_secs: 1,
    };
    let mut service = Service::new(shutdown).handle_signals(false);
    service
        .serve_admin(&ListenerSettings::loopback(0))
        .expect("bind admin");
    let stop = service.stop_handle();
    let started = Instant::now();
    stop.stop();
    stop.stop();
    service.run_until_stopped().await.expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a hurried stop does not wait out a 60 s drain delay"
    );
}

#[actix_web::test]
async fn a_taken_port_is_an_error_naming_the_listener_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let mut service = Service::new(ShutdownSettings::default()).handle_signals(false);
    let error = service
        .serve_admin(&ListenerSettings::loopback(port))
        .expect_err("the port is taken");
    assert!(matches!(
        error,
        RuntimeError::Bind {
            listener: "admin",
            ..
        }
    ));
    let message = error.to_string();
    assert!(
        message.contains("admin") && message.contains(&format!("127.0.0.1:{port}")),
        "{message}"
    );
}
