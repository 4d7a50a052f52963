//! TLS against a real PostgreSQL: libpq's `sslmode` meanings as this crate implements them.
//!
//! One throwaway server (scripts/pg.sh) serves a certificate issued by a CA made here with
//! the `openssl` command (Debian's `postgresql` depends on it through `ssl-cert`, so every
//! machine that can run the server has it). Checked:
//! - `verify-full` connects with the right CA and host name, and refuses a wrong CA and a
//!   host name the certificate does not carry;
//! - `require` and `prefer` against a TLS server are encrypted (`pg_stat_ssl` of the
//!   connection's own backend), `disable` is not.
//!
//! A missing `openssl` or PostgreSQL fails the tests; nothing is skipped.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tasks_postgres::pool::{Password, PoolSettings};
use tasks_postgres::tls::SslMode;

const PASSWORD: &str = "tls-test-password";
/// The name in the server certificate; `localhost` resolves to the loopback address the
/// server listens on, while `127.0.0.1` reaches the same server under a name the
/// certificate does not carry.
const CERT_HOST: &str = "localhost";

struct Server {
    port: u16,
    ca: PathBuf,
    other_ca: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A self-signed CA in DIR/NAME.{crt,key}.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A server certificate for DNS name `CERT_HOST`, issued by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{CERT_HOST}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={CERT_HOST}"),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one server of this test binary, started on first use. A watchdog shell stops it
/// (immediate) and removes its directory when this process exits.
fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = repo_root();
        let pg_sh = root.join("scripts/pg.sh");
        let dir = tempfile::Builder::new()
            .prefix("pgtls")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        let tls = dir.join("tls");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&tls).unwrap();
        make_ca(&tls, "ca");
        make_ca(&tls, "other-ca");
        make_server_cert(&tls, "ca");

        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let out = Command::new(&pg_sh)
                .args(["start", data.to_str().unwrap(), &port.to_string()])
                .env("PGPASSWORD_TASKS", PASSWORD)
                .env("PG_SUPERUSER", "1")
                .env("PG_DURABLE", "0")
                .stdin(Stdio::null())
                .output()
                .expect("run scripts/pg.sh");
            if out.status.success() {
                watchdog(&pg_sh, &dir, &data);
                enable_tls(&data, &tls, port);
                return Server {
                    port,
                    ca: tls.join("ca.crt"),
                    other_ca: tls.join("other-ca.crt"),
                };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("scripts/pg.sh start failed: {last}");
    })
}

// The watchdog outlives this process on purpose: it is never waited for.
#[allow(clippy::zombie_processes)]
fn watchdog(pg_sh: &Path, dir: &Path, data: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; '{pg}' stop '{data}' immediate >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg = pg_sh.display(),
        data = data.display(),
        dir = dir.display(),
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the watchdog");
}

/// The key must belong to the server's user (pg.sh runs it as an unprivileged user under
/// root): give the TLS files the data directory's owner, then turn TLS on by reload.
fn enable_tls(data: &Path, tls: &Path, port: u16) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = std::fs::metadata(data).unwrap().uid();
    let gid = std::fs::metadata(data).unwrap().gid();
    for f in ["server.crt", "server.key"] {
        let p = tls.join(f);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(tls, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sql = [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            tls.join("server.crt").display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}'",
            tls.join("server.key").display()
        ),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ];
    let rt = runtime();
    rt.block_on(async {
        let client = settings(SslMode::Disable, "127.0.0.1", port, None)
            .connect(Duration::from_secs(5))
            .await
            .expect("connect without TLS to configure the server");
        for s in &sql {
            client.batch_execute(s).await.unwrap();
        }
        // The reload is asynchronous: wait until the server offers TLS.
        for _ in 0..50 {
            let on: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
            if on == "on" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("ssl did not turn on after pg_reload_conf (see the server log next to the data directory)");
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn settings(mode: SslMode, host: &str, port: u16, ca: Option<&Path>) -> PoolSettings {
    PoolSettings {
        host: host.into(),
        port,
        name: "tasks".into(),
        user: "tasks".into(),
        password: Password::Value(PASSWORD.into()),
        sslmode: mode,
        ca_file: ca.map(Path::to_path_buf),
        connect_timeout: Duration::from_secs(5),
        application_name: "tls-test".into(),
        ..PoolSettings::default()
    }
}

/// Connects and answers whether this very connection is encrypted (`pg_stat_ssl`).
fn connect_encrypted(mode: SslMode, host: &str, ca: Option<&Path>) -> Result<bool, String> {
    let port = server().port;
    runtime().block_on(async {
        let client = settings(mode, host, port, ca)
            .connect(Duration::from_secs(5))
            .await
            .map_err(|e| format!("{e}: {e:?}"))?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get::<_, bool>(0))
    })
}

#[test]
fn verify_full_accepts_the_right_ca_and_host_name() {
    let s = server();
    let encrypted = connect_encrypted(SslMode::VerifyFull, CERT_HOST, Some(&s.ca))
        .expect("verify-full with the issuing CA and the certificate's host name");
    assert!(encrypted, "a verify-full connection must be encrypted");
}

#[test]
fn verify_full_refuses_a_wrong_ca() {
    let s = server();
    let err = connect_encrypted(SslMode::VerifyFull, CERT_HOST, Some(&s.other_ca))
        .expect_err("a certificate from another CA must be refused");
    // The driver reports only that the handshake failed; the cause is pinned by the
    // control: the same host name with the issuing CA connects.
    assert!(
        err.contains("TLS handshake"),
        "refused, but not in the TLS handshake: {err}"
    );
    connect_encrypted(SslMode::VerifyFull, CERT_HOST, Some(&s.ca)).expect("control: the right CA");
}

#[test]
fn verify_full_refuses_a_wrong_host_name() {
    let s = server();
    // Same server, same CA, but reached as 127.0.0.1: not a name in the certificate.
    let err = connect_encrypted(SslMode::VerifyFull, "127.0.0.1", Some(&s.ca))
        .expect_err("a host name the certificate does not carry must be refused");
    assert!(
        err.contains("TLS handshake"),
        "refused, but not in the TLS handshake: {err}"
    );
    // Control: the same CA with the certificate's host name connects.
    connect_encrypted(SslMode::VerifyFull, CERT_HOST, Some(&s.ca))
        .expect("control: the right name");
}

#[test]
fn verify_full_without_a_ca_file_refuses_a_private_ca() {
    // The bundled public roots do not include a private CA.
    server();
    let err = connect_encrypted(SslMode::VerifyFull, CERT_HOST, None)
        .expect_err("a private CA is not among the public roots");
    assert!(
        err.contains("TLS handshake"),
        "refused, but not in the TLS handshake: {err}"
    );
}

#[test]
fn require_encrypts() {
    server();
    assert!(connect_encrypted(SslMode::Require, "127.0.0.1", None).expect("require connects"));
}

#[test]
fn prefer_against_a_tls_server_encrypts() {
    server();
    assert!(connect_encrypted(SslMode::Prefer, "127.0.0.1", None).expect("prefer connects"));
}

#[test]
fn disable_does_not_encrypt() {
    server();
    assert!(!connect_encrypted(SslMode::Disable, "127.0.0.1", None).expect("disable connects"));
}
