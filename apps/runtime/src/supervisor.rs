//! A small supervisor: a role's tasks start in the order they are added and stop by their
//! declared [`Stage`] (tasks of one stage in the order added), each stop awaited before
//! the next begins. A task that ends by itself (it failed, or finished early) stops the
//! rest the same way.
//!
//! The order is the point: the embedded `folio` starts its analytics worker before the
//! bookstore, but stops the intake first (no new events), then the analytics worker
//! (publishes its open windows), then the statistics ingest (stores them), then the
//! operator endpoints, so a clean stop loses nothing and stays observable to the end.

use std::future::Future;

use folio_domain::analytics::StopFlag;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One way to stop something, run once.
pub type StopStep = Box<dyn FnOnce() -> BoxFuture<'static, anyhow::Result<()>> + Send>;

/// When a task stops, earliest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// What takes new work in: the HTTP API, the outbox relay, the spool's forwarder.
    Intake,
    /// The analytics worker: publishes what it holds, commits and leaves its group.
    Analytics,
    /// The statistics ingest: stores what is already on the bus.
    Ingest,
    /// Metrics and health endpoints, last, so a stop can be watched.
    Operator,
}

/// The tasks of one process.
#[derive(Default)]
pub struct Supervisor {
    stages: Vec<(Stage, &'static str, StopStep)>,
    /// Cancelled when a spawned task ends by itself.
    ended: CancellationToken,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.names();
        f.debug_struct("Supervisor")
            .field("stages", &names)
            .finish()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `task` with a stop flag of its own; at its turn the flag is set and the task
    /// awaited.
    pub fn spawn<F, Fut>(&mut self, stage: Stage, name: &'static str, task: F)
    where
        F: FnOnce(StopFlag) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let flag = StopFlag::new();
        let run = task(flag.clone());
        let ended = self.ended.clone();
        let handle = tokio::spawn(async move {
            let result = run.await;
            ended.cancel();
            result
        });
        self.stages.push((
            stage,
            name,
            Box::new(move || {
                Box::pin(async move {
                    flag.stop();
                    handle.await?
                })
            }),
        ));
    }

    /// Adds a stop step for something started elsewhere (a bookstore's intake).
    pub fn on_stop<F, Fut>(&mut self, stage: Stage, name: &'static str, stop: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.stages
            .push((stage, name, Box::new(move || Box::pin(stop()))));
    }

    /// The tasks' names, in stop order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut order: Vec<_> = self.stages.iter().map(|(s, n, _)| (*s, *n)).collect();
        order.sort_by_key(|(s, _)| *s);
        order.into_iter().map(|(_, n)| n).collect()
    }

    /// Waits until `shutdown` is cancelled or a spawned task ends by itself, then stops
    /// everything in order.
    pub async fn run_until(self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.ended.cancelled() => warn!("a task ended by itself; stopping the others"),
        }
        self.stop().await
    }

    /// Stops every stage in order. Each runs even when an earlier one failed; the first
    /// error is returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // Stable: tasks of one stage stop in the order they were added.
        self.stages.sort_by_key(|(s, _, _)| *s);
        let mut first = None;
        for (_, name, stop) in self.stages {
            match stop().await {
                Ok(()) => info!(task = name, "stopped"),
                Err(e) => {
                    warn!(task = name, error = %format!("{e:#}"), "stopped with an error");
                    first.get_or_insert(e.context(name));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    fn log() -> Arc<Mutex<Vec<String>>> {
        Arc::default()
    }

    fn push(log: &Arc<Mutex<Vec<String>>>, line: &str) {
        log.lock().expect("log").push(line.to_string());
    }

    #[tokio::test]
    async fn stages_stop_in_the_declared_order_and_every_one_runs() {
        let seen = log();
        let mut sup = Supervisor::new();
        // Started in another order than they stop.
        for (stage, name) in [
            (Stage::Analytics, "analytics"),
            (Stage::Ingest, "ingest"),
            (Stage::Intake, "intake"),
        ] {
            let seen = seen.clone();
            sup.spawn(stage, name, move |stop| async move {
                stop.stopped().await;
                push(&seen, name);
                if name == "analytics" {
                    anyhow::bail!("boom");
                }
                Ok(())
            });
        }
        let tail = seen.clone();
        sup.on_stop(Stage::Operator, "last", move || async move {
            push(&tail, "last");
            Ok(())
        });
        assert_eq!(sup.names(), ["intake", "analytics", "ingest", "last"]);
        let err = sup.stop().await.expect_err("analytics failed");
        assert_eq!(format!("{err:#}"), "analytics: boom");
        assert_eq!(
            *seen.lock().expect("log"),
            ["intake", "analytics", "ingest", "last"]
        );
    }

    #[tokio::test]
    async fn a_task_ending_by_itself_stops_the_rest() {
        let seen = log();
        let mut sup = Supervisor::new();
        let a = seen.clone();
        sup.spawn(Stage::Intake, "waits", move |stop| async move {
            stop.stopped().await;
            push(&a, "waits stopped");
            Ok(())
        });
        sup.spawn(Stage::Analytics, "fails", |_| async {
            anyhow::bail!("lost the bus")
        });
        let never = CancellationToken::new();
        let result = tokio::time::timeout(Duration::from_secs(5), sup.run_until(&never))
            .await
            .expect("did not wait for a shutdown");
        assert_eq!(
            format!("{:#}", result.expect_err("failed")),
            "fails: lost the bus"
        );
        assert_eq!(*seen.lock().expect("log"), ["waits stopped"]);
    }
}
