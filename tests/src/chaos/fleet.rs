//! The processes under test: `folio-analytics` and `folio-bookstore` binaries started with
//! the run's environment, each logging to its own file. `kill -9` is [`Fleet::kill`],
//! a clean stop is [`Fleet::terminate`] (SIGTERM), and [`Fleet::reap`] reports every exit
//! the driver did not cause. Dropping the fleet kills whatever still runs, so no process
//! outlives the tool.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// SIGABRT, what `std::process::abort` dies of.
pub const SIGABRT: i32 = 6;

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Analytics,
    Bookstore,
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Analytics => "folio-analytics",
            Role::Bookstore => "folio-bookstore",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Role::Analytics => "analytics",
            Role::Bookstore => "bookstore",
        }
    }
}

struct Proc {
    name: String,
    role: Role,
    child: Child,
    abort_after: Option<u64>,
    started: Instant,
}

/// A process that ended without the driver asking.
#[derive(Debug, Clone)]
pub struct Exit {
    pub name: String,
    pub role: Role,
    pub status: ExitStatus,
    /// Its `FOLIO_FAULT_ABORT_AFTER_UPSERT`, if it had one.
    pub abort_after: Option<u64>,
}

impl Exit {
    /// It died of the abort hook, as asked.
    pub fn is_hook_abort(&self) -> bool {
        self.abort_after.is_some() && self.status.signal() == Some(SIGABRT)
    }
}

/// What the fleet did.
#[derive(Debug, Default, Clone)]
pub struct FleetCounters {
    pub analytics_started: u32,
    pub analytics_killed: u32,
    pub analytics_stopped: u32,
    pub bookstore_started: u32,
    pub bookstore_killed: u32,
    pub bookstore_stopped: u32,
    /// Processes that did not stop cleanly on SIGTERM: (name, what happened).
    pub unclean_stops: Vec<(String, String)>,
}

/// The running processes.
pub struct Fleet {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Settings for one role only, applied after `env`.
    role_env: Vec<(Role, String, String)>,
    procs: Vec<Proc>,
    seq: u32,
    pub counters: FleetCounters,
}

impl Fleet {
    /// A fleet running binaries from `bin_dir` with `env`, logging under `log_dir`.
    pub fn new(bin_dir: &Path, log_dir: &Path, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        for role in [Role::Analytics, Role::Bookstore] {
            let bin = bin_dir.join(role.binary());
            if !bin.is_file() {
                bail!(
                    "{} not found; build it first: cargo build --release -p folio-analytics -p folio-bookstore",
                    bin.display()
                );
            }
        }
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(Fleet {
            bin_dir: bin_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            env,
            role_env: Vec::new(),
            procs: Vec::new(),
            seq: 0,
            counters: FleetCounters::default(),
        })
    }

    /// Sets `key` for every process of `role` started from now on (the bookstore's fixed
    /// `HTTP_ADDR`, say, which the analytics instances must not share).
    pub fn set_role_env(&mut self, role: Role, key: &str, value: &str) {
        self.role_env.retain(|(r, k, _)| !(*r == role && k == key));
        self.role_env
            .push((role, key.to_string(), value.to_string()));
    }

    /// Starts one process; returns its name (`analytics-3`).
    pub fn start(&mut self, role: Role, abort_after: Option<u64>) -> anyhow::Result<String> {
        self.seq += 1;
        let name = format!("{}-{}", role.label(), self.seq);
        let log = File::create(self.log_dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(self.bin_dir.join(role.binary()));
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(
                self.role_env
                    .iter()
                    .filter(|(r, _, _)| *r == role)
                    .map(|(_, k, v)| (k.as_str(), v.as_str())),
            )
            .env_remove("FOLIO_FAULT_ABORT_AFTER_UPSERT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(n) = abort_after {
            cmd.env("FOLIO_FAULT_ABORT_AFTER_UPSERT", n.to_string());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", role.binary()))?;
        match role {
            Role::Analytics => self.counters.analytics_started += 1,
            Role::Bookstore => self.counters.bookstore_started += 1,
        }
        self.procs.push(Proc {
            name: name.clone(),
            role,
            child,
            abort_after,
            started: Instant::now(),
        });
        Ok(name)
    }

    /// Names of the running processes of `role`, oldest first.
    pub fn running(&self, role: Role) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.name.clone())
            .collect()
    }

    /// Names of the processes of `role` running for at least `age` (past start-up, so
    /// their signal handlers are installed), oldest first.
    pub fn running_for(&self, role: Role, age: Duration) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.role == role && p.started.elapsed() >= age)
            .map(|p| p.name.clone())
            .collect()
    }

    fn take(&mut self, name: &str) -> Option<Proc> {
        let i = self.procs.iter().position(|p| p.name == name)?;
        Some(self.procs.remove(i))
    }

    /// Sends `signal` (`STOP`, `CONT`) to a running process.
    pub fn signal(&self, name: &str, signal: &str) -> anyhow::Result<()> {
        let Some(p) = self.procs.iter().find(|p| p.name == name) else {
            bail!("{name} is not running");
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), p.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {name} failed");
        }
        Ok(())
    }

    /// `kill -9`.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(mut p) = self.take(name) else {
            bail!("{name} is not running");
        };
        let _ = p.child.kill();
        wait_for(&mut p.child, Duration::from_secs(10)).await;
        match p.role {
            Role::Analytics => self.counters.analytics_killed += 1,
            Role::Bookstore => self.counters.bookstore_killed += 1,
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (status 0). An unclean one is
    /// recorded in the counters (and the process killed); returns whether it was clean.
    pub async fn terminate(&mut self, name: &str, timeout: Duration) -> anyhow::Result<bool> {
        let Some(mut p) = self.take(name) else {
            bail!("{name} is not running");
        };
        let pid = p.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = wait_for(&mut p.child, timeout).await;
        match p.role {
            Role::Analytics => self.counters.analytics_stopped += 1,
            Role::Bookstore => self.counters.bookstore_stopped += 1,
        }
        let clean = match status {
            Some(s) if s.success() => true,
            Some(s) => {
                self.counters
                    .unclean_stops
                    .push((p.name.clone(), format!("exited with {s} after SIGTERM")));
                false
            }
            None => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                self.counters.unclean_stops.push((
                    p.name.clone(),
                    format!("still running {timeout:?} after SIGTERM; killed"),
                ));
                false
            }
        };
        Ok(clean)
    }

    /// Processes that ended by themselves since the last call.
    pub fn reap(&mut self) -> Vec<Exit> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.procs.len() {
            match self.procs[i].child.try_wait() {
                Ok(Some(status)) => {
                    let p = self.procs.remove(i);
                    out.push(Exit {
                        name: p.name,
                        role: p.role,
                        status,
                        abort_after: p.abort_after,
                    });
                }
                _ => i += 1,
            }
        }
        out
    }

    /// The log file of a process.
    pub fn log_of(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// SIGTERM to everything, bookstores last (they store what analytics publishes on its
    /// way out).
    pub async fn stop_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        for role in [Role::Analytics, Role::Bookstore] {
            for name in self.running(role) {
                self.terminate(&name, timeout).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

async fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
