//! One shutdown for the whole process: SIGTERM or Ctrl-C cancels a
//! [`CancellationToken`]; every loop selects on it or on a [`StopFlag`] bridged from it,
//! so a stop also cuts short the sleeps and backoffs in progress.

use std::future::Future;

use folio_domain::analytics::StopFlag;
use tokio_util::sync::CancellationToken;

/// The process's shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// Installs the SIGTERM and Ctrl-C handlers now, not when first awaited: call it first
    /// thing in `main`, so a SIGTERM that arrives while the process is still starting is
    /// kept, and the process stops cleanly once started instead of dying of the signal.
    pub fn install() -> Self {
        let token = CancellationToken::new();
        let signal = signal();
        let cancel = token.clone();
        tokio::spawn(async move {
            signal.await;
            cancel.cancel();
        });
        Shutdown { token }
    }

    /// A shutdown only [`Shutdown::request`] triggers (tests, tools).
    pub fn manual() -> Self {
        Shutdown {
            token: CancellationToken::new(),
        }
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn request(&self) {
        self.token.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once a stop is requested.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }
}

/// A [`StopFlag`] for the domain's loops, set when `token` is cancelled.
pub fn stop_flag(token: &CancellationToken) -> StopFlag {
    let flag = StopFlag::new();
    let set = flag.clone();
    let token = token.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        set.stop();
    });
    flag
}

/// Resolves on SIGTERM or Ctrl-C; the handlers are installed when this is called.
fn signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = streams;
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_requested_shutdown_sets_the_bridged_flag() {
        let shutdown = Shutdown::manual();
        let flag = stop_flag(&shutdown.token());
        assert!(!flag.is_stopped());
        shutdown.request();
        tokio::time::timeout(std::time::Duration::from_secs(5), flag.stopped())
            .await
            .expect("the flag follows the token");
        assert!(flag.is_stopped() && shutdown.is_requested());
    }
}
