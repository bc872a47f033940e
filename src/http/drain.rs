//! Graceful shutdown of `serve`: on SIGTERM/SIGINT stop accepting, let tool calls finish
//! within the grace period, cancel the rest, then close every session.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::App;

/// On SIGTERM/SIGINT: stop accepting, let tool calls finish for up to `grace`, cancel
/// the rest, then close every session.
pub(super) async fn drain_on_signal(
    app: Arc<App>,
    signals: Signals,
    stop_accepting: CancellationToken,
    listener_closed: CancellationToken,
    grace: Duration,
) {
    signals.wait().await;
    let in_flight = app.calls.calls.count();
    tracing::info!(
        in_flight,
        "shutting down: no new connections; waiting up to {} for tool calls in flight",
        humantime::format_duration(grace)
    );
    stop_accepting.cancel();
    listener_closed.cancelled().await;
    tracing::info!("listening socket closed: new connections are refused");
    if tokio::time::timeout(grace, app.calls.calls.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = app.calls.calls.count(),
            "grace period over; cancelling the remaining tool calls"
        );
        app.calls.cancel_calls();
    }
    // Let the answers reach their clients before the sessions close.
    let flushed = async {
        app.calls.calls.idle().await;
        app.responses.idle().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), flushed).await;
    app.transport_shutdown.cancel();
}

/// The shutdown signals, registered up front: tokio only takes over a signal's default
/// action (exit) once a handler for it exists.
pub(super) struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
