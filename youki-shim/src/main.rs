//! `pinacle-youki`: a small OCI runtime command line over youki's
//! `libcontainer`, shaped like `runc`'s (`create`, `start`, `state`, `exec`,
//! `kill`, `delete`, `list`).
//!
//! libcontainer's builders are synchronous and fork from the calling process,
//! so they must not run on an async runtime's worker threads. The host agent
//! therefore runs this short-lived binary for each operation, exactly as it
//! runs `runsc`, and one driver serves both runtimes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::sys::wait::{waitpid, WaitStatus};

mod userns;

#[derive(Parser)]
#[command(version, about = "OCI runtime over youki's libcontainer, used by pinacle's host agent")]
struct Cli {
    /// Directory holding the state of the containers.
    #[arg(long, default_value = "/run/pinacle-youki")]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle; its process inherits this command's stdio.
    Create {
        #[arg(long)]
        bundle: PathBuf,
        id: String,
    },
    /// Start a created container.
    Start { id: String },
    /// Print the container's state as JSON (`{"id","status","pid"}`).
    State { id: String },
    /// Run a command in a running container and exit with its exit code.
    Exec {
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// `NAME=VALUE`, repeatable.
        #[arg(long)]
        env: Vec<String>,
        /// The command's environment is this process's own (so that no
        /// value shows on a command line, which every host user can read).
        #[arg(long)]
        env_from_environ: bool,
        id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Send a signal (name or number) to the container's processes.
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container; `--force` kills it first.
    Delete {
        #[arg(long)]
        force: bool,
        id: String,
    },
    /// Print the ids of all containers, one a line.
    List,
    /// Mount the root filesystem of a pod that runs in a user namespace:
    /// each `--source NAME=DIR` id-mapped (on-disk uid 0 is `--host-id`) at
    /// `LAYERS/NAME`, then an overlay of `LAYERS/LOWER` under `LAYERS/UPPER`
    /// owned by that namespace, at `--target`.
    MountRootfs {
        #[arg(long)]
        layers: PathBuf,
        #[arg(long = "source", value_parser = parse_source)]
        sources: Vec<(String, PathBuf)>,
        #[arg(long)]
        lower: String,
        #[arg(long)]
        upper: String,
        #[arg(long)]
        work: String,
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        host_id: u32,
        #[arg(long)]
        count: u32,
    },
}

fn parse_source(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !name.contains('/') && !name.starts_with('.') => {
            Ok((name.to_owned(), PathBuf::from(dir)))
        }
        _ => Err(format!("expected NAME=DIR (NAME without '/'), got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pinacle-youki: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(root: &std::path::Path, id: &str) -> Result<Container> {
    let dir = root.join(id);
    if !dir.exists() {
        bail!("container {id} does not exist");
    }
    let mut container = Container::load(dir).with_context(|| format!("loading container {id}"))?;
    container.refresh_status().with_context(|| format!("reading status of {id}"))?;
    Ok(container)
}

fn run(cli: Cli) -> Result<u8> {
    std::fs::create_dir_all(&cli.root)
        .with_context(|| format!("creating state directory {}", cli.root.display()))?;
    match cli.command {
        Command::Create { bundle, id } => {
            ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(&cli.root)?
                .with_executor(DefaultExecutor {})
                .validate_id()?
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .with_context(|| format!("creating container {id}"))?;
            Ok(0)
        }
        Command::Start { id } => {
            load(&cli.root, &id)?.start().with_context(|| format!("starting {id}"))?;
            Ok(0)
        }
        Command::State { id } => {
            let c = load(&cli.root, &id)?;
            let status = match c.status() {
                ContainerStatus::Creating => "creating",
                ContainerStatus::Created => "created",
                ContainerStatus::Running => "running",
                ContainerStatus::Stopped => "stopped",
                ContainerStatus::Paused => "paused",
            };
            let pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
            println!("{{\"id\":\"{id}\",\"status\":\"{status}\",\"pid\":{pid}}}");
            Ok(0)
        }
        Command::Exec { cwd, env, env_from_environ, id, command } => {
            let c = load(&cli.root, &id)?;
            if !c.can_exec() {
                bail!("container {id} is not running");
            }
            let mut env: HashMap<String, String> = env
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                .collect();
            if env_from_environ {
                env.extend(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))));
            }
            let pid = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(&cli.root)?
                .with_executor(DefaultExecutor {})
                .as_tenant()
                .with_detach(false)
                .with_cwd(cwd)
                .with_env(env)
                .with_container_args(command)
                .build()
                .with_context(|| format!("exec in {id}"))?;
            let code = match waitpid(pid, None)? {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                _ => 0,
            };
            Ok(u8::try_from(code).unwrap_or(255))
        }
        Command::Kill { id, signal } => {
            let sig = Signal::try_from(signal.as_str())
                .with_context(|| format!("unknown signal {signal}"))?;
            load(&cli.root, &id)?.kill(sig, true).with_context(|| format!("killing {id}"))?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            match load(&cli.root, &id) {
                Ok(mut c) => c.delete(force).with_context(|| format!("deleting {id}"))?,
                // A create cut short leaves state that cannot be loaded:
                // forced, remove what is there (its empty cgroup goes with
                // the agent's reconcile).
                Err(e) if force && cli.root.join(&id).is_dir() => {
                    eprintln!("pinacle-youki: {id} unreadable ({e:#}); removing its state");
                    std::fs::remove_dir_all(cli.root.join(&id)).with_context(|| format!("removing state of {id}"))?;
                }
                Err(e) => return Err(e),
            }
            Ok(0)
        }
        Command::MountRootfs { layers, sources, lower, upper, work, target, host_id, count } => {
            userns::mount_rootfs(&userns::RootfsPlan { sources, layers, lower, upper, work, target, host_id, count })?;
            Ok(0)
        }
        Command::List => {
            for entry in std::fs::read_dir(&cli.root)? {
                let entry = entry?;
                if entry.path().join("state.json").exists() {
                    println!("{}", entry.file_name().to_string_lossy());
                }
            }
            Ok(0)
        }
    }
}
