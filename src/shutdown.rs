//! What a graceful shutdown waits for and cancels: the tool calls in flight (and, over
//! HTTP, the responses still streaming their answers).

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Things in flight that a shutdown waits for (tokio-util's tracker, whose tokens count
/// as tasks while they live).
#[derive(Clone, Default)]
pub struct InFlight(TaskTracker);

impl InFlight {
    /// Counts one thing in flight until the token is dropped.
    pub fn enter(&self) -> TaskTrackerToken {
        self.0.token()
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Resolves when nothing is in flight. Things may still enter afterwards (a
    /// closed tracker still counts new tokens; closing only lets `wait` end).
    pub async fn idle(&self) {
        self.0.close();
        self.0.wait().await;
    }
}

/// Shared by all sessions of an HTTP server: the tool calls in flight, and the
/// cancellation a graceful shutdown sends them once its grace period is over.
#[derive(Clone, Default)]
pub struct CallTracker {
    shutdown: CancellationToken,
    pub calls: InFlight,
}

impl CallTracker {
    pub fn enter(&self) -> TaskTrackerToken {
        self.calls.enter()
    }

    /// Cancels every running and future tool call.
    pub fn cancel_calls(&self) {
        self.shutdown.cancel();
    }

    /// Whether the shutdown has cancelled the calls.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// A token cancelled by the request's own cancellation or by shutdown.
    pub fn link(&self, request: &CancellationToken) -> LinkedCancel {
        let token = self.shutdown.child_token();
        let (linked, request) = (token.clone(), request.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = request.cancelled() => linked.cancel(),
                _ = linked.cancelled() => {}
            }
        });
        LinkedCancel(token)
    }
}

/// Cancels its token when dropped, which also ends the linking task.
pub struct LinkedCancel(CancellationToken);

impl LinkedCancel {
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }
}

impl Drop for LinkedCancel {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_what_is_in_flight_and_can_be_awaited_again() {
        let in_flight = InFlight::default();
        in_flight.idle().await;
        let token = in_flight.enter();
        assert_eq!(in_flight.count(), 1);
        let waiting = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(token);
        waiting.await.unwrap();
        let again = in_flight.enter();
        assert_eq!(in_flight.count(), 1);
        drop(again);
        in_flight.idle().await;
    }
}
