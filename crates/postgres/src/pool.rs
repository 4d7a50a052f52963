//! A deadpool-postgres pool whose every wait is bounded and whose connections re-read a
//! rotated password.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use deadpool_postgres::Pool;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;
use crate::tls::{SslMode, client_config};

/// Where the password comes from.
#[derive(Clone, Default)]
pub enum Password {
    /// No password (trust or peer authentication).
    #[default]
    None,
    /// A fixed value.
    Value(SecretString),
    /// A file read again for every new connection, so a rotated Kubernetes Secret takes
    /// effect without a restart. `fallback` is used when the file cannot be read.
    File {
        /// The mounted secret file.
        path: PathBuf,
        /// The value read at start-up.
        fallback: SecretString,
    },
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Value(_) => f.write_str("Value([REDACTED])"),
            Self::File { path, .. } => write!(f, "File({})", path.display()),
        }
    }
}

impl Password {
    fn current(&self) -> Option<SecretString> {
        match self {
            Self::None => None,
            Self::Value(v) => Some(v.clone()),
            Self::File { path, fallback } => match std::fs::read_to_string(path) {
                Ok(mut text) => {
                    if text.ends_with('\n') {
                        text.pop();
                        if text.ends_with('\r') {
                            text.pop();
                        }
                    }
                    Some(SecretString::from(text))
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot re-read the password file; using the start-up value");
                    Some(fallback.clone())
                }
            },
        }
    }
}

/// Connection and pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub name: String,
    /// Role name.
    pub user: String,
    /// Password source.
    pub password: Password,
    /// TLS mode.
    pub sslmode: SslMode,
    /// CA bundle for [`SslMode::VerifyFull`] (the Mozilla roots when absent).
    pub ca_file: Option<PathBuf>,
    /// Most connections the pool holds.
    pub max_size: usize,
    /// Bound on establishing one connection; also the pool's create timeout.
    pub connect_timeout: Duration,
    /// How long a request waits for a free connection before failing as unavailable.
    pub wait_timeout: Duration,
    /// Server-side `statement_timeout` for every statement; zero disables it.
    pub statement_timeout: Duration,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 5432,
            name: "postgres".into(),
            user: "postgres".into(),
            password: Password::None,
            sslmode: SslMode::Prefer,
            ca_file: None,
            max_size: 16,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            application_name: "service".into(),
        }
    }
}

impl PoolSettings {
    /// The driver configuration (without the password: that is read per connection).
    #[must_use]
    pub fn pg_config(&self, statement_timeout: Duration) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.name)
            .user(&self.user)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            // A database that vanishes without closing its sockets (node failure, network
            // partition) must not hold requests for the ~15 minutes of TCP retransmission:
            // unacknowledged data gives up after the connect timeout (at least 1 s), and
            // idle connections are probed after 30 s so recycling finds them dead. On
            // Linux the user timeout also bounds the keepalive probing; the interval and
            // count apply elsewhere.
            .tcp_user_timeout(self.connect_timeout.max(Duration::from_secs(1)))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
            })
            // Set at connection start-up: no extra round trip per checkout.
            .options(format!(
                "-c statement_timeout={}",
                statement_timeout.as_millis()
            ));
        config
    }

    /// A connector for these settings.
    ///
    /// # Errors
    /// [`Error::Settings`] for unusable TLS material.
    pub fn connector(&self) -> Result<Connector, Error> {
        let tls = client_config(self.sslmode, self.ca_file.as_deref())?.map(MakeRustlsConnect::new);
        Ok(Connector {
            password: self.password.clone(),
            tls: Arc::new(tls),
        })
    }

    /// Opens one connection outside any pool (migrations, tools), with its own
    /// statement timeout.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect(&self, statement_timeout: Duration) -> Result<Client, Error> {
        let (client, driver) = self.connect_undriven(statement_timeout).await?;
        tokio::spawn(driver);
        Ok(client)
    }

    /// As [`PoolSettings::connect`], but the connection's I/O is returned, not spawned:
    /// the client answers only while the caller polls the [`ConnectionDriver`], on the
    /// task or runtime it chooses (for example the `LocalSet` its requests run on).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the server cannot be reached.
    pub async fn connect_undriven(
        &self,
        statement_timeout: Duration,
    ) -> Result<(Client, ConnectionDriver), Error> {
        let connector = self.connector()?;
        // The driver's connect timeout covers reaching the socket; a server that accepts
        // and then never answers the start-up and login exchange is bounded here. (Pooled
        // connections are bounded by the pool's create timeout.)
        let config = self.pg_config(statement_timeout);
        let opening = connector.establish(&config);
        tokio::time::timeout(self.connect_timeout, opening)
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "no answer to the connection start-up within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })?
            .map_err(Error::from_pg)
    }
}

/// A connection's I/O: until it is polled (spawned), its client sends nothing.
pub type ConnectionDriver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Opens connections: reads the current password, negotiates TLS, spawns the
/// connection task.
#[derive(Clone)]
pub struct Connector {
    password: Password,
    tls: Arc<Option<MakeRustlsConnect>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("password", &self.password)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    async fn establish(
        &self,
        base: &tokio_postgres::Config,
    ) -> Result<(Client, ConnectionDriver), tokio_postgres::Error> {
        let mut config = base.clone();
        if let Some(password) = self.password.current() {
            config.password(password.expose_secret().as_bytes());
        }
        let (client, driver): (Client, ConnectionDriver) = match self.tls.as_ref() {
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                (client, Box::pin(drive(connection)))
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                (client, Box::pin(drive(connection)))
            }
        };
        Ok((client, driver))
    }

    async fn open(
        &self,
        base: &tokio_postgres::Config,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let (client, driver) = self.establish(base).await?;
        Ok((client, tokio::spawn(driver)))
    }
}

async fn drive<F>(connection: F)
where
    F: Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "database connection closed");
    }
}

impl deadpool_postgres::Connect for Connector {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = pg_config.clone();
        Box::pin(async move { self.open(&config).await })
    }
}

/// Builds the pool. No connection is opened until one is needed, so this succeeds while
/// the database is still starting.
///
/// # Errors
/// [`Error::Settings`] for invalid TLS material or pool parameters.
pub fn build_pool(settings: &PoolSettings) -> Result<Pool, Error> {
    let manager = Manager::from_connect(
        settings.pg_config(settings.statement_timeout),
        settings.connector()?,
        // `Fast` recycling drops connections whose socket has closed (a restarted
        // database) without a round trip on every checkout.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| Error::Settings(e.to_string()))
}

/// A cheap round trip proving the database answers (the readiness check).
///
/// # Errors
/// [`Error::Unavailable`] when no connection can be had or the query fails.
pub async fn ping(pool: &Pool) -> Result<(), Error> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT 1")
        .await
        .map_err(Error::from_pg)?;
    client
        .query_one(&statement, &[])
        .await
        .map_err(Error::from_pg)?;
    Ok(())
}
