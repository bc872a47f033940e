//! Serializing the calls of one task: an in-process lock per key (cheap to wait for,
//! cancellable), then the store's lock across processes and replicas. Held only for the
//! critical section (decide, write the intent, create, write the id).
//!
//! A call whose `--max-call-wait` runs out while another call of its task holds the
//! lock answers `building` (not an error), describing what the store says that call is
//! making.

use tokio::time::Instant;

use super::answer::Origin;
use super::create::{Call, Checked, Task, Until};
use super::decide::{Found, found_state, unusable};
use super::outcome::{Answer, CreateError};
use super::progress::Phase;
use super::wait::Readiness;
use crate::store::{LockError, StoreLock};

/// The locks of a task's critical section.
pub(super) struct TaskLock {
    _local: Vec<tokio::sync::OwnedMutexGuard<()>>,
    store: StoreLock,
}

impl TaskLock {
    /// The store's lock, for the store operations of the critical section (on
    /// PostgreSQL they run on the connection that holds it).
    pub(super) fn store(&mut self) -> Option<&mut StoreLock> {
        Some(&mut self.store)
    }

    /// Ends the critical section (the in-process locks go with it).
    pub(super) async fn release(self) {
        self.store.release().await;
    }
}

pub(super) enum Locked {
    Yes(TaskLock),
    NotInTime(Box<Answer>),
}

const WAITING: &str = "waiting for another create_workspace call of this task to finish";

impl Call<'_> {
    /// Takes the task's locks: in this process first, then across processes and
    /// replicas. Progress says so when another call holds them.
    pub(super) async fn lock(
        &mut self,
        task: &Task,
        checked: &Checked,
    ) -> Result<Locked, CreateError> {
        let mut keys = task.keys.clone();
        keys.sort();
        keys.dedup();
        let mut local = Vec::with_capacity(keys.len());
        let mut announced = false;
        for key in &keys {
            let acquire = self.engine.locks.get(task.user, key).lock_owned();
            tokio::pin!(acquire);
            // Uncontended: no progress noise.
            if let Some(held) = futures::FutureExt::now_or_never(&mut acquire) {
                local.push(held);
                continue;
            }
            if !announced {
                announced = true;
                self.progress.update(Phase::WaitingForTask, WAITING).await;
            }
            let deadline = self.deadline;
            match self.until(&mut acquire, true, deadline).await {
                Until::Done(held) => local.push(held),
                Until::Cancelled => return Err(CreateError::Cancelled),
                Until::OutOfTime => {
                    drop(local);
                    let answer = self.not_in_time(task, checked).await?;
                    return Ok(Locked::NotInTime(Box::new(answer)));
                }
            }
        }
        if keys.is_empty() {
            // Nothing ties this call to any other (a stateless call without a name).
            return Ok(Locked::Yes(TaskLock {
                _local: local,
                store: StoreLock::None,
            }));
        }
        let wait = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.engine.config.lock_wait,
        };
        let store = &self.engine.store;
        let held = match self.guard(store.try_lock(task.user, &keys)).await? {
            Ok(Some(held)) => Ok(held),
            Ok(None) => {
                // Another process or replica is in this task's critical section.
                if !announced {
                    self.progress.update(Phase::WaitingForTask, WAITING).await;
                }
                self.guard(store.lock(task.user, &keys, wait)).await?
            }
            Err(err) => Err(LockError::Store(err)),
        };
        match held {
            Ok(store) => Ok(Locked::Yes(TaskLock {
                _local: local,
                store,
            })),
            Err(LockError::Busy) if self.deadline.is_some() => {
                drop(local);
                Ok(Locked::NotInTime(Box::new(
                    self.not_in_time(task, checked).await?,
                )))
            }
            Err(LockError::Busy) => Err(CreateError::Busy {
                waited: humantime::format_duration(wait).to_string(),
            }),
            Err(LockError::Store(err)) => Err(CreateError::Store(err)),
        }
    }

    /// The `building` answer of a call whose time ran out while another call of its task
    /// held the lock: what the store says that call is making.
    async fn not_in_time(&mut self, task: &Task, checked: &Checked) -> Result<Answer, CreateError> {
        let records = self.unlocked_records(task).await?;
        let record = records.name.or(records.key);
        if let Some(binding) = &record
            && let Some(id) = binding.workspace_id
        {
            let client = self.client;
            let ws = self.guard(client.workspace(id)).await?.map_err(|e| {
                CreateError::coder_on(
                    "could not load the task's workspace",
                    e,
                    &binding.workspace_name,
                )
            })?;
            let config = &self.engine.config;
            let coming_up = unusable(&ws, chrono::Utc::now(), config.agent_timeout).is_none()
                && found_state(&ws) != Found::Stopped
                && super::wait::phase_of(&ws) != Phase::Ready;
            if coming_up {
                let phase = super::wait::phase_of(&ws);
                return Ok(self.result(
                    &ws,
                    false,
                    Readiness::StillWaiting(phase),
                    Origin::Existing(Found::Building),
                    Vec::new(),
                ));
            }
            // Ready, stopped or unusable: the other call is returning, starting or
            // replacing it; say only that it is at work, and name the way back.
            return self
                .busy_answer(&checked.template, Some(ws.name), false)
                .await;
        }
        let pending = record
            .map(|b| b.workspace_name)
            .or_else(|| task.canonical.clone());
        self.busy_answer(&checked.template, pending, true).await
    }
}
