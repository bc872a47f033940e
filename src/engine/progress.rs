//! Progress of a `create_workspace` call, mapped onto one number line that only
//! goes up, with a heartbeat so clients that reset their timeout on progress
//! never give up while nothing visible changes.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

/// Where a creation stands. Each phase owns a band of the 0–100 progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for another `create_workspace` call of the same task to finish.
    WaitingForTask,
    /// Preparing: reading the template, checking parameters, sending the create.
    Preparing,
    /// The build job waits for a provisioner.
    Queued,
    /// The build job runs (terraform plan/apply).
    Provisioning,
    /// A stopped workspace is being stopped or started again.
    Restarting,
    /// The build succeeded; waiting for the workspace agent to connect.
    AgentConnecting,
    /// The agent is connected and runs its startup scripts.
    StartupScripts,
    /// Done.
    Ready,
}

impl Phase {
    fn band(self) -> (f64, f64) {
        match self {
            Phase::WaitingForTask => (0.0, 2.0),
            Phase::Preparing => (2.0, 5.0),
            Phase::Queued => (5.0, 12.0),
            Phase::Provisioning | Phase::Restarting => (12.0, 60.0),
            Phase::AgentConnecting => (60.0, 75.0),
            Phase::StartupScripts => (75.0, 98.0),
            Phase::Ready => (100.0, 100.0),
        }
    }
}

/// The total that progress values are reported against.
pub const PROGRESS_TOTAL: f64 = 100.0;
/// Progress messages stay under this many characters (clients truncate at 200).
pub const MAX_MESSAGE_CHARS: usize = 180;

/// Receives progress; the MCP layer turns it into `notifications/progress`.
pub trait ProgressSink: Send + Sync {
    fn send(&self, progress: f64, total: f64, message: String) -> BoxFuture<'_, ()>;

    /// A heartbeat: the same phase again, with how long it has lasted. Sent like any
    /// progress unless the sink cares (a task does not store it: nothing changed).
    fn heartbeat(&self, progress: f64, total: f64, message: String) -> BoxFuture<'_, ()> {
        self.send(progress, total, message)
    }

    /// The workspace the call is about, once it is known (the name a create is sent
    /// with, or the workspace found): a task records it, so that whoever follows the
    /// task after a restart asks for that workspace by name.
    fn named<'a>(&'a self, _workspace_name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Progress nobody hears.
pub struct Silent;

impl ProgressSink for Silent {
    fn send(&self, _: f64, _: f64, _: String) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Turns phase changes into strictly increasing progress values.
pub struct ProgressTracker<'a> {
    sink: &'a dyn ProgressSink,
    heartbeat: Duration,
    last_value: f64,
    phase: Option<Phase>,
    steps_in_phase: u32,
    phase_started: Instant,
    message: String,
    last_sent: Instant,
    /// Since when Coder has not been answering, if it has not: said before the message.
    outage: Option<Instant>,
}

impl<'a> ProgressTracker<'a> {
    pub fn new(sink: &'a dyn ProgressSink, heartbeat: Duration) -> Self {
        Self {
            sink,
            heartbeat,
            last_value: -1.0,
            phase: None,
            steps_in_phase: 0,
            phase_started: Instant::now(),
            message: String::new(),
            last_sent: Instant::now(),
            outage: None,
        }
    }

    /// Reports `phase` with `message`, unless that is exactly what was reported last.
    /// Tells the sink which workspace the call is about.
    pub async fn named(&self, workspace_name: &str) {
        self.sink.named(workspace_name).await;
    }

    pub async fn update(&mut self, phase: Phase, message: impl Into<String>) {
        let message = message.into();
        if self.phase == Some(phase) && self.message == message {
            return;
        }
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.steps_in_phase = 0;
            self.phase_started = Instant::now();
        }
        self.message = message;
        let text = self.message.clone();
        self.emit(text).await;
    }

    /// Coder stopped answering at `since` (or answers again: `None`). While it does not,
    /// every message starts with how long it has not; the change is reported at once.
    pub async fn set_outage(&mut self, since: Option<Instant>) {
        if self.outage == since {
            return;
        }
        self.outage = since;
        if self.phase.is_some() {
            let text = self.message.clone();
            self.emit(text).await;
        }
    }

    /// When the next heartbeat is due.
    pub fn heartbeat_due(&self) -> Instant {
        self.last_sent + self.heartbeat
    }

    /// Re-sends the current phase with how long it has lasted.
    pub async fn heartbeat(&mut self) {
        let Some(_) = self.phase else {
            self.last_sent = Instant::now();
            return;
        };
        let elapsed = self.phase_started.elapsed().as_secs();
        let text = format!("{} ({elapsed} s)", self.message);
        self.emit_as(text, true).await;
    }

    async fn emit(&mut self, message: String) {
        self.emit_as(message, false).await;
    }

    async fn emit_as(&mut self, message: String, heartbeat: bool) {
        let message = match self.outage {
            Some(since) => format!(
                "Coder unreachable for {} s, retrying; last known: {message}",
                since.elapsed().as_secs()
            ),
            None => message,
        };
        let phase = self.phase.unwrap_or(Phase::Preparing);
        let (start, end) = phase.band();
        // Approaches the end of the band without reaching it: 0, 1/5, 1/3, 3/7, ...
        let k = f64::from(self.steps_in_phase);
        let mut value = round_cents(start + (end - start) * (k / (k + 4.0)));
        if value <= self.last_value {
            value = round_cents(self.last_value + 0.01);
        }
        self.steps_in_phase += 1;
        self.last_value = value;
        self.last_sent = Instant::now();
        let message = truncate(&message, MAX_MESSAGE_CHARS);
        if heartbeat {
            self.sink.heartbeat(value, PROGRESS_TOTAL, message).await;
        } else {
            self.sink.send(value, PROGRESS_TOTAL, message).await;
        }
    }
}

fn round_cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(f64, String)>>);
    impl ProgressSink for Recorder {
        fn send(&self, progress: f64, _total: f64, message: String) -> BoxFuture<'_, ()> {
            self.0.lock().unwrap().push((progress, message));
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn values_strictly_increase_even_when_phases_repeat() {
        let recorder = Recorder::default();
        let mut tracker = ProgressTracker::new(&recorder, Duration::from_secs(5));
        tracker.update(Phase::Queued, "queued").await;
        tracker.update(Phase::Queued, "queued").await; // duplicate: not re-sent
        for i in 0..200 {
            tracker
                .update(Phase::Provisioning, format!("stage {i}"))
                .await;
        }
        tracker.heartbeat().await;
        tracker.update(Phase::Queued, "queued again").await; // an earlier band
        tracker.update(Phase::Ready, "ready").await;
        let sent = recorder.0.lock().unwrap();
        assert_eq!(sent.len(), 204);
        assert!(sent.windows(2).all(|w| w[1].0 > w[0].0), "{sent:?}");
        assert_eq!(sent.last().unwrap().0, 100.0);
        assert!(sent.iter().all(|(_, m)| m.chars().count() < 200));
    }

    #[test]
    fn truncates_long_messages() {
        let long = "x".repeat(500);
        assert_eq!(truncate(&long, 180).chars().count(), 180);
        assert_eq!(truncate("short", 180), "short");
    }
}
