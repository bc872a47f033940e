//! The periodic sweep of `serve`: sessions rmcp expired or closed, idle legacy sessions,
//! and the store's expired records.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::App;
use super::sessions::Transport;

/// Drops bindings of sessions rmcp has expired or closed, expires idle legacy sessions,
/// and closes sessions of both transports that were opened and never used (`unused`).
pub(super) async fn sweep_sessions(
    app: Arc<App>,
    sessions: Arc<LocalSessionManager>,
    idle: Duration,
    unused: Duration,
) {
    let period = (idle.min(unused) / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut last_expiry = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let live = sessions.sessions.read().await;
        let gone: Vec<String> = app
            .registry
            .ids(Transport::StreamableHttp)
            .into_iter()
            .filter(|id| !live.contains_key(id.as_str()))
            .collect();
        drop(live);
        for id in gone {
            tracing::info!(session = %id, "session ended");
            app.end_session(&id).await;
        }
        // A client that sent `initialize` and went away must not hold one of its token's
        // sessions until the idle timeout.
        for (id, entry) in app.registry.unused(unused) {
            tracing::info!(session = %id, "unused session expired");
            if entry.transport == Transport::StreamableHttp
                && let Err(err) = sessions.close_session(&id.clone().into()).await
            {
                tracing::warn!(session = %id, error = %err, "could not close an unused session");
            }
            app.end_session(&id).await;
        }
        for (id, entry) in app.registry.idle(idle) {
            if entry.transport == Transport::LegacySse {
                tracing::info!(session = %id, "legacy SSE session expired");
                app.end_session(&id).await;
            }
        }
        if last_expiry.elapsed() >= STORE_EXPIRY_PERIOD {
            last_expiry = tokio::time::Instant::now();
            if let Err(err) = app.engine.store().expire().await {
                tracing::warn!(error = %err, "could not remove expired store records");
            }
        }
    }
}

/// How often `serve` removes store records whose retention is over.
const STORE_EXPIRY_PERIOD: Duration = Duration::from_secs(3600);
