//! `pinacle`: run the platform (`up`, `server`, `agent`) and use it (`pod`,
//! `image`, `template`, `login`).

mod account;
mod agent;
mod client;
mod config;
mod hosts;
mod images;
mod memory;
mod router;
mod router_modules;
mod pod_config;
mod pods;
mod proxy_setup;
mod shell;
mod ssh;
mod up;

use std::process::ExitCode;

/// mimalloc: the proxy and API allocate per request; glibc's allocator
/// showed up at about a tenth of the proxy's CPU profile
/// (scripts/bench/proxy.sh with BENCH_PERF).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pinacle", version, about = "Self-hostable cloud dev environments")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything in one process: API, job queue and a local host agent.
    Up(up::ServeArgs),
    /// Run the API server only (agents run elsewhere).
    Server(up::ServeArgs),
    /// Bring the database to the current schema and exit (a deployment's
    /// migration step; servers also migrate when they start).
    Migrate {
        /// The database (`postgres://…`, or SQLite in the data directory).
        #[arg(long, env = "PINACLE_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "PINACLE_DATA_DIR", default_value_os_t = up::default_data_dir())]
        data_dir: std::path::PathBuf,
    },
    /// Run a host agent that joins a control plane (`pinacle host add NAME`
    /// gives the join token) and serves its pods over one outgoing link.
    Agent(agent::AgentArgs),
    /// Sign in (password or API token) and save the credentials.
    Login(account::LoginArgs),
    /// Sign out and forget the saved credentials.
    Logout,
    /// Approve sign-ins of other devices (`pinacle login --device`).
    #[command(subcommand)]
    Device(account::DeviceCommand),
    /// Set, list and delete secrets (injected into pods as environment variables).
    #[command(subcommand)]
    Secret(account::SecretCommand),
    /// Teams, members and invitations.
    #[command(subcommand)]
    Team(account::TeamCommand),
    /// Instance administration.
    #[command(subcommand)]
    Admin(account::AdminCommand),
    /// The hosts that run pods: list, cordon, drain, remove.
    #[command(subcommand)]
    Host(hosts::HostCommand),
    /// Create, inspect and control pods.
    #[command(subcommand)]
    Pod(pods::PodCommand),
    /// Open an SSH session in a pod with a fresh 15-minute certificate
    /// (runs the system's `ssh`; arguments after `--` go to it).
    Ssh(ssh::SshArgs),
    /// Register, list and remove your SSH public keys.
    #[command(subcommand)]
    SshKey(ssh::SshKeyCommand),
    /// Print ssh_config Host blocks so `ssh POD.pinacle` works.
    SshConfig(ssh::SshConfigArgs),
    /// Build and list root filesystem images on this host.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Check and write pinacle.yaml files.
    #[command(subcommand)]
    Config(pod_config::ConfigCommand),
    /// List pod templates.
    #[command(subcommand)]
    Template(pods::TemplateCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(pods::TokenCommand),
    /// Read and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(pods::AuditCommand),
    /// The agents' long-term memory: add, search, list, history, verify,
    /// export, import, and its MCP server on stdio (`pinacle memory mcp`).
    Memory(memory::MemoryArgs),
    /// The AI router: run a task, list models, show or reload the policy,
    /// see spend against budgets.
    #[command(subcommand)]
    Router(router::RouterCommand),
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("PINACLE_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,apalis=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("PINACLE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    // The platform's secrets leave the environment before any thread or
    // child process exists: runtimes, `ip`, `nft`, `mount` and hooks would
    // inherit them otherwise.
    up::take_secrets_from_env();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode> = match cli.command {
        Command::Up(args) => {
            init_tracing();
            up::run(args, up::Role::All).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Migrate { database_url, data_dir } => {
            init_tracing();
            let url = database_url.unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("pinacle.db").display()));
            match pinacle_api::state::migrate(&url).await {
                Ok(applied) if applied.is_empty() => {
                    println!("the database is current");
                    Ok(ExitCode::SUCCESS)
                }
                Ok(applied) => {
                    println!("applied {} migration(s): {}", applied.len(), applied.join(", "));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
            }
        }
        Command::Server(args) => {
            init_tracing();
            up::run(args, up::Role::Server).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            init_tracing();
            agent::run(args).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Login(args) => account::login(args).await,
        Command::Logout => account::logout().await,
        Command::Device(cmd) => account::device(cmd).await,
        Command::Secret(cmd) => account::secret(cmd).await,
        Command::Team(cmd) => account::team(cmd).await,
        Command::Admin(cmd) => account::admin(cmd).await,
        Command::Host(cmd) => hosts::run(cmd).await,
        Command::Pod(cmd) => pods::run(cmd).await,
        Command::Image(cmd) => images::image(cmd).await,
        Command::Template(cmd) => pods::template(cmd).await,
        Command::Config(cmd) => pod_config::run(cmd),
        Command::Audit(cmd) => pods::audit(cmd).await,
        Command::Memory(args) => memory::run(args).await,
        Command::Router(cmd) => router::run(cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Token(cmd) => pods::token(cmd).await,
        Command::Ssh(args) => ssh::ssh(args).await,
        Command::SshKey(cmd) => ssh::ssh_key(cmd).await,
        Command::SshConfig(args) => ssh::ssh_config(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
