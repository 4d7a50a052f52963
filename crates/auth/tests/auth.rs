//! tasks-auth against real components: a local OIDC issuer (actix-web on 127.0.0.1:0
//! serving a discovery document and a JWKS with keys generated here), real token files on
//! disk, and an actix-web app using the extractor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::dev::{ServerHandle, Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{App, HttpResponse, HttpServer, test, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use getrandom::SysRng;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use tasks_auth::{
    AuthError, AuthMethod, Authenticator, AuthenticatorBuilder, InvalidToken, Principal,
    mint_api_token,
};

const AUDIENCE: &str = "tasks-api";
const REALM: &str = "tasks";
/// Bound on every polled condition.
const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Logs: every test's log lines are captured, so tests can prove no token was logged.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        captured
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().0.lock().expect("log buffer")).into_owned()
}

fn assert_never_logged(secret: &str) {
    let text = logged();
    assert!(!text.contains(secret), "a token was logged");
    // Nor its signature (or, for an API token, its random part) on its own.
    let tail = secret.rsplit(['.', '_']).next().unwrap_or(secret);
    if tail.len() >= 16 {
        assert!(!text.contains(tail), "part of a token was logged");
    }
}

// ---------------------------------------------------------------------------------------
// Keys, generated at run time.

struct RsaKey {
    kid: String,
    private_der: Vec<u8>,
    public_pem: String,
    jwk: Value,
}

struct EcKey {
    kid: String,
    private_der: Vec<u8>,
    jwk: Value,
}

fn rsa_key(kid: &str) -> RsaKey {
    let key = rsa::PrivateKey::new(&mut SysRng, 2048).expect("RSA key");
    let public = key.to_public_key();
    RsaKey {
        kid: kid.to_owned(),
        private_der: key.to_pkcs1_der().expect("DER").as_bytes().to_vec(),
        public_pem: public
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .expect("PEM"),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n_bytes()),
            "e": URL_SAFE_NO_PAD.encode(public.e_bytes()),
        }),
    }
}

fn ec_key(kid: &str) -> EcKey {
    use p256::pkcs8::EncodePrivateKey as _;
    let key: p256::ecdsa::SigningKey =
        rsa::Generate::try_generate_from_rng(&mut SysRng).expect("EC key");
    let point = key.verifying_key().to_sec1_point(false);
    EcKey {
        kid: kid.to_owned(),
        private_der: key.to_pkcs8_der().expect("DER").as_bytes().to_vec(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(point.x().expect("x")),
            "y": URL_SAFE_NO_PAD.encode(point.y().expect("y")),
        }),
    }
}

/// Two RSA keys, generated once per run on two threads (RSA key generation is the slow
/// part of this suite in a debug build).
static RSA_KEYS: LazyLock<(RsaKey, RsaKey)> = LazyLock::new(|| {
    let second = std::thread::spawn(|| rsa_key("rsa-2"));
    let first = rsa_key("rsa-1");
    (first, second.join().expect("keygen thread"))
});

fn rsa1() -> &'static RsaKey {
    &RSA_KEYS.0
}

fn rsa2() -> &'static RsaKey {
    &RSA_KEYS.1
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "alice",
        "iat": now(), "exp": now() + 600, "scope": "tasks:read openid",
    })
}

fn header(alg: Algorithm, kid: &str) -> Header {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header
}

fn sign_rsa(key: &RsaKey, claims: &Value) -> String {
    sign_rsa_with(key, Algorithm::RS256, claims)
}

fn sign_rsa_with(key: &RsaKey, alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &header(alg, &key.kid),
        claims,
        &EncodingKey::from_rsa_der(&key.private_der),
    )
    .expect("signs")
}

fn sign_ec(key: &EcKey, claims: &Value) -> String {
    jsonwebtoken::encode(
        &header(Algorithm::ES256, &key.kid),
        claims,
        &EncodingKey::from_ec_der(&key.private_der),
    )
    .expect("signs")
}

fn unsigned(kid: &str, claims: &Value) -> String {
    let head = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{head}.{body}.")
}

// ---------------------------------------------------------------------------------------
// A local OIDC issuer.

#[derive(Default)]
struct IssuerState {
    base: OnceLock<String>,
    keys: Mutex<Vec<Value>>,
    failing: AtomicBool,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

struct Issuer {
    base: String,
    state: Arc<IssuerState>,
    handle: ServerHandle,
}

async fn discovery(state: web::Data<IssuerState>) -> HttpResponse {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let base = state.base.get().cloned().unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/jwks"),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(state: web::Data<IssuerState>) -> HttpResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let keys = state.keys.lock().expect("keys").clone();
    HttpResponse::Ok().json(json!({ "keys": keys }))
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(IssuerState::default());
        *state.keys.lock().expect("keys") = keys;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        state.base.set(base.clone()).expect("set once");
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            base,
            state,
            handle,
        }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.state.keys.lock().expect("keys") = keys;
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    async fn stop(&self) {
        self.handle.stop(false).await;
    }

    fn builder(&self) -> AuthenticatorBuilder {
        Authenticator::builder()
            .realm(REALM)
            .oidc(&self.base, [AUDIENCE, "other-api"])
    }
}

/// An address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

// ---------------------------------------------------------------------------------------
// The protected app, and assertions on its answers.

async fn read(principal: Principal) -> Result<HttpResponse, AuthError> {
    principal.require("tasks:read")?;
    Ok(HttpResponse::Ok().body(principal.id().to_owned()))
}

async fn write(principal: Principal) -> Result<HttpResponse, AuthError> {
    principal.require("tasks:write")?;
    Ok(HttpResponse::Ok().body(principal.id().to_owned()))
}

async fn app(
    authenticator: Authenticator,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error> {
    test::init_service(
        App::new()
            .app_data(web::Data::new(authenticator))
            .route("/read", web::get().to(read))
            .route("/write", web::get().to(write)),
    )
    .await
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn call(
    app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
    path: &str,
    token: Option<&str>,
) -> Answer {
    let mut request = test::TestRequest::get().uri(path);
    if let Some(token) = token {
        request = request.insert_header((AUTHORIZATION, format!("Bearer {token}")));
    }
    let response = test::call_service(app, request.to_request()).await;
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &actix_web::http::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status();
    let challenge = header(WWW_AUTHENTICATE);
    let retry_after = header(RETRY_AFTER);
    let content_type = header(CONTENT_TYPE);
    let body = String::from_utf8_lossy(&test::read_body(response).await).into_owned();
    if let Some(token) = token {
        assert!(!body.contains(token), "the answer quotes the token");
    }
    Answer {
        status,
        challenge,
        retry_after,
        content_type,
        body,
    }
}

fn assert_accepted(answer: &Answer, id: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, id);
}

fn assert_invalid_token(answer: &Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(
        answer.challenge.as_deref(),
        Some(
            format!(
                r#"Bearer realm="{REALM}", error="invalid_token", error_description="{description}""#
            )
            .as_str()
        ),
    );
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = serde_json::from_str(&answer.body).expect("problem JSON");
    assert_eq!(problem["status"], 401);
    assert_eq!(problem["title"], "Unauthorized");
    assert_eq!(problem["type"], "about:blank");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(description)),
        "{problem}"
    );
}

fn assert_unavailable(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.challenge, None);
    let retry: u64 = answer
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1);
}

/// Polls `condition` every 20 ms until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting until {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// JWTs.

#[actix_web::test]
async fn valid_rs256_and_es256_tokens_are_accepted_with_their_scopes() {
    logs();
    let ec = ec_key("ec-1");
    let issuer = Issuer::start(vec![rsa1().jwk.clone(), ec.jwk.clone()]).await;
    let authenticator = issuer.builder().build().expect("builds");
    let app = app(authenticator.clone()).await;

    let rs = sign_rsa(rsa1(), &claims(&issuer.base));
    assert_accepted(&call(&app, "/read", Some(&rs)).await, "oidc:alice");
    // `scope` holds tasks:read only.
    let refused = call(&app, "/write", Some(&rs)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.challenge.as_deref(),
        Some(
            r#"Bearer realm="tasks", error="insufficient_scope", error_description="the token lacks a scope this operation needs", scope="tasks:write""#
        )
    );
    assert_eq!(
        refused.content_type.as_deref(),
        Some("application/problem+json")
    );

    // ES256, scopes in `scp` as a list, the audience the second one configured.
    let mut es_claims = claims(&issuer.base);
    es_claims["sub"] = json!("robot");
    es_claims["aud"] = json!(["unrelated", "other-api"]);
    es_claims.as_object_mut().expect("object").remove("scope");
    es_claims["scp"] = json!(["tasks:read", "tasks:write"]);
    let es = sign_ec(&ec, &es_claims);
    assert_accepted(&call(&app, "/write", Some(&es)).await, "oidc:robot");

    let principal = authenticator.authenticate(&es).await.expect("accepted");
    assert_eq!(principal.method(), AuthMethod::Jwt);
    assert_eq!(principal.subject(), "robot");
    assert!(principal.expires_at().is_some());
    // Discovery once, keys once: the second token and repeats need no fetch.
    assert_eq!(issuer.discovery_hits(), 1);
    assert_eq!(issuer.jwks_hits(), 1);
    assert_never_logged(&rs);
    assert_never_logged(&es);
    assert!(!format!("{principal:?} {authenticator:?}").contains(&es));
    issuer.stop().await;
}

#[actix_web::test]
async fn refused_tokens_get_401_invalid_token_with_the_reason() {
    logs();
    let stranger = ec_key("stranger");
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let app = app(issuer.builder().build().expect("builds")).await;
    let good = claims(&issuer.base);

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 120);
    let mut within_leeway = good.clone();
    within_leeway["exp"] = json!(now() - 5);
    let mut early = good.clone();
    early["nbf"] = json!(now() + 120);
    let mut wrong_issuer = good.clone();
    wrong_issuer["iss"] = json!("https://someone-else.example");
    let mut wrong_audience = good.clone();
    wrong_audience["aud"] = json!("another-service");
    let mut no_subject = good.clone();
    no_subject.as_object_mut().expect("object").remove("sub");

    let valid = sign_rsa(rsa1(), &good);
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let mut forged = good.clone();
        forged["scope"] = json!("tasks:read tasks:write admin");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        parts.join(".")
    };
    let hs256_with_public_key = jsonwebtoken::encode(
        &header(Algorithm::HS256, &rsa1().kid),
        &good,
        &EncodingKey::from_secret(rsa1().public_pem.as_bytes()).expect("HMAC key"),
    )
    .expect("signs");

    assert_accepted(
        &call(&app, "/read", Some(&sign_rsa(rsa1(), &within_leeway))).await,
        "oidc:alice",
    );
    let cases = [
        (sign_rsa(rsa1(), &expired), "the token has expired"),
        (sign_rsa(rsa1(), &early), "the token is not valid yet"),
        (
            sign_rsa(rsa1(), &wrong_issuer),
            "the token was issued by another issuer",
        ),
        (
            sign_rsa(rsa1(), &wrong_audience),
            "the token is meant for another audience",
        ),
        (
            sign_rsa(rsa1(), &no_subject),
            "the token lacks a required claim",
        ),
        (
            unsigned(&rsa1().kid, &good),
            "the token's signing algorithm is not accepted",
        ),
        (
            hs256_with_public_key.clone(),
            "the token's signing algorithm is not accepted",
        ),
        // The key is for RS256; the header cannot pick another algorithm.
        (
            sign_rsa_with(rsa1(), Algorithm::RS384, &good),
            "the token's algorithm does not match its signing key",
        ),
        (tampered, "the token's signature is invalid"),
        (
            sign_ec(&stranger, &good),
            "the token's signing key is unknown",
        ),
        ("not.a.jwt".to_owned(), "the token is malformed"),
    ];
    for (token, description) in &cases {
        let answer = call(&app, "/read", Some(token)).await;
        assert_invalid_token(&answer, description);
        assert_never_logged(token);
    }

    // Missing credentials: a challenge without an error code; another scheme likewise.
    let missing = call(&app, "/read", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.challenge.as_deref(),
        Some(r#"Bearer realm="tasks""#)
    );
    let basic = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/read")
            .insert_header((AUTHORIZATION, "Basic dXNlcjpwYXNz"))
            .to_request(),
    )
    .await;
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        basic.headers().get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
        Some(&br#"Bearer realm="tasks""#[..])
    );
    // A malformed bearer header is a bad request.
    let malformed = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/read")
            .insert_header((AUTHORIZATION, "Bearer a b"))
            .to_request(),
    )
    .await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    issuer.stop().await;
}

#[actix_web::test]
async fn a_key_rotation_is_picked_up_without_a_restart() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .jwks_refresh_min_interval(Duration::from_millis(200))
        .build()
        .expect("builds");
    let app = app(authenticator.clone()).await;
    let old = sign_rsa(rsa1(), &claims(&issuer.base));
    assert_accepted(&call(&app, "/read", Some(&old)).await, "oidc:alice");

    // The issuer rotates: the new key only.
    issuer.publish(vec![rsa2().jwk.clone()]);
    let new = sign_rsa(rsa2(), &claims(&issuer.base));
    eventually("a token signed with the new key is accepted", || async {
        call(&app, "/read", Some(&new)).await.status == StatusCode::OK
    })
    .await;
    // The withdrawn key vouches for nothing, even for a token verified (and cached) before.
    assert_invalid_token(
        &call(&app, "/read", Some(&old)).await,
        "the token's signing key is unknown",
    );
    assert_eq!(authenticator.jwks_key_count(), Some(1));
    issuer.stop().await;
}

#[actix_web::test]
async fn a_withdrawn_key_stops_working_once_the_keys_are_older_than_their_max_age() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone(), rsa2().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .jwks_max_age(Duration::from_millis(100))
        .jwks_refresh_min_interval(Duration::from_millis(50))
        .build()
        .expect("builds");
    let cached = sign_rsa(rsa1(), &claims(&issuer.base));
    authenticator.authenticate(&cached).await.expect("accepted");

    // The issuer withdraws rsa-1; nothing names an unknown kid, so only the key set's age
    // can trigger the (background) refresh.
    issuer.publish(vec![rsa2().jwk.clone()]);
    let mut attempt = 0;
    eventually("a token signed with the withdrawn key is refused", || {
        attempt += 1;
        let mut fresh = claims(&issuer.base);
        fresh["sub"] = json!(format!("user-{attempt}"));
        let token = sign_rsa(rsa1(), &fresh);
        let authenticator = authenticator.clone();
        async move { authenticator.authenticate(&token).await.is_err() }
    })
    .await;
    let error = authenticator
        .authenticate(&cached)
        .await
        .expect_err("cache cleared");
    assert_eq!(error.invalid_token_reason(), Some(InvalidToken::UnknownKey));
    issuer.stop().await;
}

#[actix_web::test]
async fn unknown_kids_refresh_the_keys_at_most_once_per_interval() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .jwks_refresh_min_interval(Duration::from_secs(60))
        .build()
        .expect("builds");

    // Twenty concurrent first requests share one discovery and one key fetch.
    let token = sign_rsa(rsa1(), &claims(&issuer.base));
    let first =
        futures_util::future::join_all((0..20).map(|_| authenticator.authenticate(&token))).await;
    assert!(first.iter().all(Result::is_ok));
    assert_eq!(issuer.discovery_hits(), 1);
    assert_eq!(issuer.jwks_hits(), 1);

    // Forty tokens with random kids: no fetch within the interval.
    let strangers: Vec<String> = (0..40)
        .map(|i| {
            let mut header = header(Algorithm::RS256, &format!("random-{i}"));
            header.typ = Some("JWT".into());
            jsonwebtoken::encode(
                &header,
                &claims(&issuer.base),
                &EncodingKey::from_rsa_der(&rsa1().private_der),
            )
            .expect("signs")
        })
        .collect();
    let answers =
        futures_util::future::join_all(strangers.iter().map(|t| authenticator.authenticate(t)))
            .await;
    for answer in answers {
        let error = answer.expect_err("refused");
        assert_eq!(error.invalid_token_reason(), Some(InvalidToken::UnknownKey));
    }
    assert_eq!(issuer.jwks_hits(), 1, "the refresh is rate-limited");
    assert_eq!(authenticator.jwks_fetch_count(), Some(1));
    issuer.stop().await;
}

#[actix_web::test]
async fn an_unknown_kid_after_the_interval_refreshes_once() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .jwks_url(&format!("{}/jwks", issuer.base))
        .jwks_refresh_min_interval(Duration::from_millis(300))
        .build()
        .expect("builds");
    authenticator.warm_up().await.expect("keys fetched");
    assert_eq!(issuer.jwks_hits(), 1);
    assert_eq!(
        issuer.discovery_hits(),
        0,
        "a configured JWKS URL needs no discovery"
    );

    let stranger = ec_key("later");
    let token = sign_ec(&stranger, &claims(&issuer.base));
    // Within the interval: refused without asking the issuer.
    let error = authenticator
        .authenticate(&token)
        .await
        .expect_err("refused");
    assert_eq!(error.invalid_token_reason(), Some(InvalidToken::UnknownKey));
    assert_eq!(issuer.jwks_hits(), 1);
    // After it: one refresh, then refused because the issuer does not know the key either.
    eventually("the unknown kid triggers a refresh", || async {
        let _ = authenticator.authenticate(&token).await;
        issuer.jwks_hits() == 2
    })
    .await;
    let error = authenticator
        .authenticate(&token)
        .await
        .expect_err("refused");
    assert_eq!(error.invalid_token_reason(), Some(InvalidToken::UnknownKey));
    assert_eq!(issuer.jwks_hits(), 2);
    issuer.stop().await;
}

#[actix_web::test]
async fn an_issuer_down_at_start_gives_503_for_jwts_while_api_tokens_work() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let minted = mint_api_token("ci", &["tasks:read"]).expect("mints");
    let file = write_tokens(dir.path(), &[minted.line()]);
    let authenticator = Authenticator::builder()
        .realm(REALM)
        .oidc(&dead_address(), [AUDIENCE])
        .api_tokens_file(&file)
        .jwks_refresh_min_interval(Duration::from_secs(30))
        .build()
        .expect("builds without the issuer");
    let warm = authenticator.warm_up().await.expect_err("nothing to fetch");
    assert!(matches!(warm, AuthError::Unavailable { .. }));

    let app = app(authenticator.clone()).await;
    let jwt = sign_rsa(rsa1(), &claims("http://127.0.0.1:1"));
    let answer = call(&app, "/read", Some(&jwt)).await;
    assert_unavailable(&answer);
    let retry: u64 = answer
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        authenticator.jwks_fetch_count(),
        Some(1),
        "the failed fetch is rate-limited too"
    );
    assert_accepted(&call(&app, "/read", Some(minted.token())).await, "token:ci");
    assert_never_logged(&jwt);
}

#[actix_web::test]
async fn an_issuer_that_recovers_is_used_once_the_interval_passes() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    issuer.set_failing(true);
    let authenticator = issuer
        .builder()
        .jwks_refresh_min_interval(Duration::from_millis(200))
        .build()
        .expect("builds");
    let app = app(authenticator).await;
    let token = sign_rsa(rsa1(), &claims(&issuer.base));
    assert_unavailable(&call(&app, "/read", Some(&token)).await);

    issuer.set_failing(false);
    eventually("the recovered issuer's keys are used", || async {
        call(&app, "/read", Some(&token)).await.status == StatusCode::OK
    })
    .await;
    issuer.stop().await;
}

#[actix_web::test]
async fn an_issuer_down_later_leaves_cached_keys_working() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .jwks_refresh_min_interval(Duration::from_millis(100))
        .build()
        .expect("builds");
    let app = app(authenticator.clone()).await;
    let before = sign_rsa(rsa1(), &claims(&issuer.base));
    assert_accepted(&call(&app, "/read", Some(&before)).await, "oidc:alice");

    issuer.stop().await;
    // A token verified before, and a new one signed by the cached key: both accepted.
    assert_accepted(&call(&app, "/read", Some(&before)).await, "oidc:alice");
    let mut other = claims(&issuer.base);
    other["sub"] = json!("bob");
    assert_accepted(
        &call(&app, "/read", Some(&sign_rsa(rsa1(), &other))).await,
        "oidc:bob",
    );
    // An unknown kid cannot be checked against a dead issuer: 503, not 401.
    let fetches = authenticator.jwks_fetch_count().unwrap_or(0);
    let unknown = sign_rsa(rsa2(), &claims(&issuer.base));
    eventually("the refresh for the unknown kid is attempted", || async {
        let answer = call(&app, "/read", Some(&unknown)).await;
        authenticator.jwks_fetch_count().unwrap_or(0) > fetches
            && answer.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The known key keeps working after that failed refresh.
    assert_accepted(&call(&app, "/read", Some(&before)).await, "oidc:alice");
}

#[actix_web::test]
async fn a_hanging_issuer_is_bounded_by_the_fetch_timeout() {
    logs();
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    actix_web::rt::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            holder.lock().expect("sockets").push(socket);
        }
    });
    let authenticator = Authenticator::builder()
        .realm(REALM)
        .oidc(&base, [AUDIENCE])
        .fetch_timeout(Duration::from_millis(300))
        .build()
        .expect("builds");
    let started = Instant::now();
    let error = authenticator
        .authenticate(&sign_rsa(rsa1(), &claims(&base)))
        .await
        .expect_err("no keys");
    assert!(matches!(error, AuthError::Unavailable { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn verified_tokens_are_cached_only_until_they_expire() {
    logs();
    let issuer = Issuer::start(vec![rsa1().jwk.clone()]).await;
    let authenticator = issuer
        .builder()
        .leeway(Duration::ZERO)
        .build()
        .expect("builds");
    let mut short = claims(&issuer.base);
    short["exp"] = json!(now() + 2);
    let token = sign_rsa(rsa1(), &short);
    authenticator.authenticate(&token).await.expect("accepted");
    eventually("the cached token expires", || async {
        matches!(
            authenticator.authenticate(&token).await,
            Err(ref e) if e.invalid_token_reason() == Some(InvalidToken::Expired)
        )
    })
    .await;
    issuer.stop().await;
}

// ---------------------------------------------------------------------------------------
// API tokens.

fn write_tokens(dir: &Path, lines: &[&str]) -> PathBuf {
    let path = dir.join("auth.api_tokens");
    replace_file(
        &path,
        &format!("# principal hash scopes\n{}\n", lines.join("\n")),
    );
    path
}

/// Replaces a file atomically, as editors and `kubectl` do.
fn replace_file(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

fn token_authenticator(file: &Path) -> Authenticator {
    Authenticator::builder()
        .realm(REALM)
        .api_tokens_file(file)
        .api_tokens_reload_interval(Duration::from_millis(20))
        .build()
        .expect("builds")
}

#[actix_web::test]
async fn api_tokens_are_accepted_scoped_and_revoked_without_a_restart() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let ci = mint_api_token("ci", &["tasks:read", "tasks:write"]).expect("mints");
    let reader = mint_api_token("dashboard", &["tasks:read"]).expect("mints");
    let file = write_tokens(dir.path(), &[ci.line(), reader.line()]);
    let authenticator = token_authenticator(&file);
    assert_eq!(authenticator.api_token_count(), Some(2));
    let app = app(authenticator.clone()).await;

    assert_accepted(&call(&app, "/write", Some(ci.token())).await, "token:ci");
    assert_accepted(
        &call(&app, "/read", Some(reader.token())).await,
        "token:dashboard",
    );
    let refused = call(&app, "/write", Some(reader.token())).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused
            .challenge
            .as_deref()
            .is_some_and(|c| c.contains(r#"error="insufficient_scope""#)
                && c.ends_with(r#"scope="tasks:write""#)),
        "{:?}",
        refused.challenge
    );
    // A JWT is not accepted without an issuer; an unknown API token is refused.
    assert_invalid_token(
        &call(
            &app,
            "/read",
            Some(&sign_rsa(rsa1(), &claims("https://x.example"))),
        )
        .await,
        "this kind of token is not accepted",
    );
    let unknown = mint_api_token("ci", &["tasks:read"]).expect("mints");
    assert_invalid_token(
        &call(&app, "/read", Some(unknown.token())).await,
        "the API token is unknown or revoked",
    );

    // Revoke the reader by editing the file.
    replace_file(&file, &format!("{}\n", ci.line()));
    eventually("the revoked token is refused", || async {
        call(&app, "/read", Some(reader.token())).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_invalid_token(
        &call(&app, "/read", Some(reader.token())).await,
        "the API token is unknown or revoked",
    );
    assert_accepted(&call(&app, "/write", Some(ci.token())).await, "token:ci");

    for token in [ci.token(), reader.token(), unknown.token()] {
        assert_never_logged(token);
        assert!(!format!("{authenticator:?} {ci:?} {reader:?}").contains(token));
    }
}

#[actix_web::test]
async fn a_malformed_reload_keeps_the_previous_tokens() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let ci = mint_api_token("ci", &["tasks:read"]).expect("mints");
    let file = write_tokens(dir.path(), &[ci.line()]);
    let authenticator = token_authenticator(&file);

    // Someone pastes a plain token where its hash belongs.
    let pasted = mint_api_token("oops", &["tasks:read"]).expect("mints");
    replace_file(
        &file,
        &format!("{}\noops {} tasks:read\n", ci.line(), pasted.token()),
    );
    eventually("the bad file is noticed", || async {
        let _ = authenticator.authenticate_api_token(ci.token());
        authenticator.api_tokens_reload_error().is_some()
    })
    .await;
    let error = authenticator.api_tokens_reload_error().unwrap_or_default();
    assert!(
        error.contains(&format!("{}:2: this is a plain token", file.display())),
        "{error}"
    );
    assert!(!error.contains(pasted.token()));
    // The previous set is still in force.
    let principal = authenticator
        .authenticate_api_token(ci.token())
        .expect("still accepted");
    assert_eq!(principal.id(), "token:ci");
    assert!(
        authenticator
            .authenticate_api_token(pasted.token())
            .is_err()
    );
    assert!(
        logged().contains(":2: this is a plain token"),
        "the rejection is logged"
    );
    assert_never_logged(pasted.token());

    // Fixed: the new set applies and the error clears.
    replace_file(&file, &format!("{}\n", pasted.line()));
    eventually("the fixed file is in force", || async {
        authenticator.authenticate_api_token(pasted.token()).is_ok()
    })
    .await;
    assert_eq!(authenticator.api_tokens_reload_error(), None);
    assert!(authenticator.authenticate_api_token(ci.token()).is_err());
}

#[cfg(unix)]
#[actix_web::test]
async fn a_kubernetes_secret_update_through_the_data_symlink_is_followed() {
    use std::os::unix::fs::symlink;
    logs();
    // The layout of a Secret volume: <dir>/auth.api_tokens -> ..data/auth.api_tokens,
    // ..data -> ..<timestamp>/; an update writes a new directory and swaps ..data.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let first = mint_api_token("ci", &["tasks:read"]).expect("mints");
    let second = mint_api_token("ci", &["tasks:read"]).expect("mints");
    std::fs::create_dir(root.join("..v1")).expect("mkdir");
    std::fs::write(
        root.join("..v1/auth.api_tokens"),
        format!("{}\n", first.line()),
    )
    .expect("write");
    symlink("..v1", root.join("..data")).expect("symlink");
    symlink("..data/auth.api_tokens", root.join("auth.api_tokens")).expect("symlink");
    let authenticator = token_authenticator(&root.join("auth.api_tokens"));
    assert!(authenticator.authenticate_api_token(first.token()).is_ok());

    std::fs::create_dir(root.join("..v2")).expect("mkdir");
    std::fs::write(
        root.join("..v2/auth.api_tokens"),
        format!("{}\n", second.line()),
    )
    .expect("write");
    symlink("..v2", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(root.join("..v1")).expect("remove");

    eventually("the new Secret version is in force", || async {
        authenticator.authenticate_api_token(second.token()).is_ok()
    })
    .await;
    assert!(authenticator.authenticate_api_token(first.token()).is_err());
}

#[actix_web::test]
async fn authentication_off_is_explicit_and_lets_everyone_in() {
    logs();
    let app = app(Authenticator::disabled(REALM)).await;
    assert_accepted(&call(&app, "/write", None).await, "anonymous");
    assert!(logged().contains("AUTHENTICATION IS DISABLED"));
}

#[actix_web::test]
async fn a_route_without_an_authenticator_is_a_server_error() {
    let app = test::init_service(App::new().route("/read", web::get().to(read))).await;
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/read").to_request()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
