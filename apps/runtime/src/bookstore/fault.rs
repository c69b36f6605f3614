//! Test-only fault injection for the chaos suite (`tests/src/bin/chaos.rs`), compiled only
//! with the `faults` feature (the test crate turns it on, so workspace builds have it; a
//! bookstore built on its own does not). Without the feature [`FaultArgs`] has no flags
//! and changes nothing. Even with it nothing is active unless its variable is set.
//!
//! `FOLIO_FAULT_ABORT_AFTER_UPSERT=n` makes the statistics ingest kill the process
//! (`std::process::abort`, as abrupt as `kill -9`) right after its n-th successful,
//! non-empty upsert returns and before the ingest commits that batch's offset: the moment
//! the delivery guarantee names, "between storing an aggregate and committing its offset"
//! (docs/contract.md). The next instance replays the batch, which the sink's upsert must
//! ignore.

#[cfg(feature = "faults")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(feature = "faults")]
use async_trait::async_trait;
use clap::Args;
#[cfg(feature = "faults")]
use folio_domain::analytics::Aggregate;
use folio_domain::ports::StatsSink;
#[cfg(feature = "faults")]
use folio_domain::ports::UpsertReport;
#[cfg(feature = "faults")]
use folio_domain::Result;

/// Fault hooks, for tests only.
#[derive(Debug, Clone, Default, Args)]
pub struct FaultArgs {
    /// Test only: abort the process right after the n-th successful statistics upsert,
    /// before its offset is committed.
    #[cfg(feature = "faults")]
    #[arg(long, env = "FOLIO_FAULT_ABORT_AFTER_UPSERT", hide = true)]
    pub abort_after_upsert: Option<u64>,
}

impl FaultArgs {
    /// `sink` as the statistics ingest should see it under these faults.
    #[cfg(not(feature = "faults"))]
    pub fn wrap_sink(&self, sink: Arc<dyn StatsSink>) -> Arc<dyn StatsSink> {
        if std::env::var_os("FOLIO_FAULT_ABORT_AFTER_UPSERT").is_some() {
            tracing::warn!(
                "FOLIO_FAULT_ABORT_AFTER_UPSERT is ignored: this binary was built without the \
                 `faults` feature (build the workspace, or add --features folio-bookstore/faults)"
            );
        }
        sink
    }

    /// `sink` as the statistics ingest should see it under these faults.
    #[cfg(feature = "faults")]
    pub fn wrap_sink(&self, sink: Arc<dyn StatsSink>) -> Arc<dyn StatsSink> {
        match self.abort_after_upsert {
            Some(n) if n > 0 => Arc::new(AbortAfterUpserts {
                inner: sink,
                after: n,
                done: AtomicU64::new(0),
            }),
            _ => sink,
        }
    }
}

/// A [`StatsSink`] that aborts the process after its n-th successful non-empty upsert.
#[cfg(feature = "faults")]
struct AbortAfterUpserts {
    inner: Arc<dyn StatsSink>,
    after: u64,
    done: AtomicU64,
}

#[cfg(feature = "faults")]
#[async_trait]
impl StatsSink for AbortAfterUpserts {
    async fn upsert(&self, aggregates: &[Aggregate]) -> Result<UpsertReport> {
        let report = self.inner.upsert(aggregates).await?;
        if !aggregates.is_empty() && self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            // stderr is unbuffered: the line is out before the process is.
            eprintln!(
                "FOLIO_FAULT_ABORT_AFTER_UPSERT: aborting after upsert {} ({report:?}), before the commit",
                self.after
            );
            std::process::abort();
        }
        Ok(report)
    }
}
