//! `tasks-server`: the command line of the task tracking API. The service itself is the
//! library's [`tasks_server::Application`]; docs/architecture.md has the runtime contract.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tasks_server::{Application, IDENTITY, SecretOrigins, probe, settings};

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
        /// A file holding the API token to authenticate with (e.g. a mounted Secret key);
        /// one trailing newline is ignored.
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
    },
    /// Mint a new API token: print the token (once; store it where the client reads it)
    /// and the line to add to the `auth.api_tokens` Secret key (a hash, never the token).
    MintToken {
        /// Who the token authenticates as (the owner of the tasks it creates).
        principal: String,
        /// Scopes, e.g. `tasks:read tasks:write`.
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
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
            token_file,
        } => round_trip(
            &base_url,
            Duration::from_secs(timeout_secs),
            token_file.as_deref(),
        ),
        Command::MintToken { principal, scopes } => {
            let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            match tasks_auth::mint_api_token(&principal, &scopes) {
                Ok(minted) => {
                    println!("token (shown once, store it now): {}", minted.token());
                    println!("line for the auth.api_tokens Secret key:");
                    println!("{}", minted.line());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("cannot mint a token: {error}");
                    ExitCode::from(2)
                }
            }
        }
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
            Application::build(&loaded.value, &SecretOrigins::of(&loaded))?
                .run_until_stopped()
                .await
        }),
    }
}

fn round_trip(base_url: &str, timeout: Duration, token_file: Option<&std::path::Path>) -> ExitCode {
    let token = match token_file.map(std::fs::read_to_string).transpose() {
        Ok(token) => token,
        Err(error) => {
            eprintln!("round trip failed: cannot read the token file: {error}");
            return ExitCode::FAILURE;
        }
    };
    let caller = probe::Caller {
        bearer: token.as_deref().map(|t| t.strip_suffix('\n').unwrap_or(t)),
        timeout,
    };
    match probe::round_trip(base_url, caller) {
        Ok(id) => {
            println!("{base_url}: task {id} created, read back and deleted");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("round trip failed: {error:#}");
            ExitCode::FAILURE
        }
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
    tasks_runtime::run_process(
        &IDENTITY,
        settings::load(),
        |s| &s.log,
        |loaded| async move { body(loaded).await.map_err(|error| format!("{error:#}")) },
    )
}
