//! `tasks-server`: the command line of the task tracking API. The service itself is the
//! library's [`tasks_server::Application`]; docs/architecture.md has the runtime contract.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tasks_server::{Application, IDENTITY, probe, settings};

/// Version and git revision, as `--version` prints them.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_REVISION"), ")");

#[derive(Debug, Parser)]
#[command(name = "tasks-server", version = VERSION, about = "Task tracking API over PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and the admin endpoints (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Validate the configuration, print it with secrets redacted, and exit.
    CheckConfig,
    /// GET a URL and exit 0 on a 2xx answer (health checks in shell-less images).
    Probe {
        /// `http://host:port/path`
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Create a task through the API at BASE_URL, read it back, delete it, and exit 0
    /// when every step answers as the API promises (the Helm test's end-to-end check).
    RoundTrip {
        /// `http://host:port` of the API listener.
        base_url: String,
        /// Give up on each request after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
    },
    /// Print the OpenAPI document and exit.
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Probe { url, timeout_secs } => {
            match probe::get(&url, Duration::from_secs(timeout_secs)) {
                Ok(status) if (200..300).contains(&status) => {
                    println!("{url}: {status}");
                    ExitCode::SUCCESS
                }
                Ok(status) => {
                    eprintln!("{url}: {status}");
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("probe failed: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RoundTrip {
            base_url,
            timeout_secs,
        } => match probe::round_trip(&base_url, Duration::from_secs(timeout_secs)) {
            Ok(id) => {
                println!("{base_url}: task {id} created, read back and deleted");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("round trip failed: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Openapi => {
            println!("{}", tasks_server::openapi_document());
            ExitCode::SUCCESS
        }
        Command::CheckConfig => check_config(),
        Command::Migrate => run(|loaded| async move {
            let pool_settings = loaded
                .value
                .pool_settings(&loaded.origin("database.password"));
            let applied = tasks_postgres::migrate::run_locked(
                &pool_settings,
                tasks_storage::embedded::runner(),
                tasks_server::MIGRATION_SCOPE,
            )
            .await?;
            tracing::info!(applied = ?applied.applied, "migrations complete");
            Ok(())
        }),
        Command::Serve => run(|loaded| async move {
            Application::build(&loaded.value, &loaded.origin("database.password"))?
                .run_until_stopped()
                .await
        }),
    }
}

fn check_config() -> ExitCode {
    match settings::load() {
        Ok(loaded) => {
            println!("# effective configuration (secrets redacted)");
            for (key, value, origin) in loaded.effective() {
                println!("{key} = {value}  # {origin}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
    }
}

/// Loads configuration and logging, then runs `body` on the actix runtime.
fn run<F, Fut>(body: F) -> ExitCode
where
    F: FnOnce(tasks_config::Loaded<settings::Settings>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    tasks_runtime::run_process(&IDENTITY, settings::load(), |s| &s.log, |loaded| async move {
        body(loaded).await.map_err(|error| format!("{error:#}"))
    })
}
