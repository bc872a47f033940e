//! Finding the task's workspace: what the store has for its keys, and what Coder says
//! about it now. And writing back what the keys mean.

use super::create::{Call, Task};
use super::decide::{Target, Via, same_name, stands_for};
use super::keys::name_key;
use super::lock::TaskLock;
use super::names::name_problem;
use super::outcome::CreateError;
use crate::coder::types::Workspace;
use crate::store::{Binding, StoreLock};

/// What the store has for a task's keys.
#[derive(Default)]
pub(super) struct Records {
    pub key: Option<Binding>,
    pub name: Option<Binding>,
}

/// What became of a recorded workspace.
enum Recorded {
    Found(Box<Workspace>),
    /// Only the intent, and Coder has a workspace of its name made from another
    /// template: not the one the intent was for.
    Other(Box<Workspace>),
    /// Only the intent, and Coder has no workspace of its name.
    Intent(String),
    /// Deleted.
    Gone,
}

impl Call<'_> {
    /// The task's records, read in its critical section.
    pub(super) async fn records(
        &mut self,
        task: &Task,
        lock: &mut TaskLock,
    ) -> Result<Records, CreateError> {
        self.read_records(task, lock.store()).await
    }

    /// The task's records, read without its lock (a call that waited too long for it).
    pub(super) async fn unlocked_records(&mut self, task: &Task) -> Result<Records, CreateError> {
        self.read_records(task, None).await
    }

    async fn read_records(
        &mut self,
        task: &Task,
        mut lock: Option<&mut StoreLock>,
    ) -> Result<Records, CreateError> {
        let store = &self.engine.store;
        let mut records = Records::default();
        if let Some(key) = task.key_record() {
            records.key = self
                .guard(store.get(lock.as_deref_mut(), task.user, &key))
                .await?
                .map_err(CreateError::Store)?;
        }
        if let Some(name) = &task.canonical {
            records.name = self
                .guard(store.get(lock, task.user, &name_key(name)))
                .await?
                .map_err(CreateError::Store)?;
        }
        Ok(records)
    }

    /// The task's workspace as Coder reports it: the one the requested name stands for,
    /// else the conversation's.
    pub(super) async fn resolve(
        &mut self,
        task: &Task,
        records: &Records,
    ) -> Result<Target, CreateError> {
        let mut intent = None;
        if let Some(name) = &task.canonical {
            if let Some(record) = &records.name {
                match self.recorded(record).await? {
                    Recorded::Found(ws) if same_name(&ws.name, name) => {
                        return Ok(found(*ws, Via::Name));
                    }
                    Recorded::Found(ws) => {
                        // A replacement made for the name: it stands unless Coder now has
                        // another workspace of that very name than the one it replaced.
                        let live = self.by_name(name).await?;
                        let replaced = record.replaced.as_ref().map(|r| r.id);
                        let chosen = stands_for(name, &ws, replaced, live.as_ref()).clone();
                        return Ok(found(chosen, Via::Name));
                    }
                    Recorded::Other(ws) => return Ok(found(*ws, Via::Name)),
                    Recorded::Intent(intended) => {
                        if same_name(&intended, name) {
                            // Already looked up: Coder has nothing of that name.
                            return Ok(match &records.key {
                                Some(key) if key.workspace_id.is_some() => self.by_key(key).await?,
                                _ => Target::Intent { name: intended },
                            });
                        }
                        intent = Some(intended);
                    }
                    Recorded::Gone => {}
                }
            }
            if let Some(ws) = self.by_name(name).await? {
                return Ok(found(ws, Via::Name));
            }
        }
        if let Some(record) = &records.key {
            return self.by_key(record).await;
        }
        Ok(match intent {
            Some(name) => Target::Intent { name },
            None => Target::Nothing,
        })
    }

    /// The conversation's workspace.
    async fn by_key(&mut self, record: &Binding) -> Result<Target, CreateError> {
        Ok(match self.recorded(record).await? {
            Recorded::Found(ws) => found(*ws, Via::Key),
            // Not what the intent was for: a workspace the caller made otherwise.
            Recorded::Other(ws) => found(*ws, Via::Name),
            Recorded::Intent(name) => Target::Intent { name },
            Recorded::Gone => Target::Gone {
                name: record.workspace_name.clone(),
            },
        })
    }

    /// What became of a recorded workspace (or intent).
    async fn recorded(&mut self, record: &Binding) -> Result<Recorded, CreateError> {
        let Some(id) = record.workspace_id else {
            // Only the intent: the create may or may not have reached Coder.
            return Ok(match self.by_name(&record.workspace_name).await? {
                Some(ws) if ws.template_id == record.template_id => Recorded::Found(Box::new(ws)),
                Some(ws) => Recorded::Other(Box::new(ws)),
                None => Recorded::Intent(record.workspace_name.clone()),
            });
        };
        let client = self.client;
        match self.guard(client.workspace(id)).await? {
            Ok(ws) => Ok(Recorded::Found(Box::new(ws))),
            Err(err) if err.is_not_found() => Ok(Recorded::Gone),
            Err(err) => Err(CreateError::coder_on(
                format!("could not load workspace {:?}", record.workspace_name),
                err,
                &record.workspace_name,
            )),
        }
    }

    /// The caller's workspace called `name`, if any.
    pub(super) async fn by_name(&mut self, name: &str) -> Result<Option<Workspace>, CreateError> {
        if name_problem(name).is_some() {
            return Ok(None);
        }
        let client = self.client;
        match self.guard(client.workspace_by_name(name)).await? {
            Ok(ws) => Ok(Some(ws)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(CreateError::coder(
                format!("could not look up workspace {name:?}"),
                err,
            )),
        }
    }

    /// Records that the task's keys mean `ws`, found `via` the name or the
    /// conversation's key, and that they were used (their retention starts again).
    /// The name's key is only bound to the workspace it names (or one made for it):
    /// a conversation's workspace returned in place of a free name leaves it free.
    pub(super) async fn bind(
        &mut self,
        task: &Task,
        records: &Records,
        ws: &Workspace,
        via: Via,
        lock: &mut TaskLock,
    ) -> Result<(), CreateError> {
        let current = |record: &Option<Binding>| {
            record
                .as_ref()
                .is_some_and(|b| b.workspace_id == Some(ws.id) && b.workspace_name == ws.name)
        };
        let mut stale = Vec::new();
        if let Some(key) = task.key_record()
            && !current(&records.key)
        {
            stale.push(key);
        }
        if via == Via::Name
            && let Some(name) = &task.canonical
            && !current(&records.name)
        {
            stale.push(name_key(name));
        }
        let store = &self.engine.store;
        if stale.is_empty() {
            // Nothing new to say; the use still counts for the retention.
            return self
                .guard(store.touch(lock.store(), task.user, &task.keys))
                .await?
                .map_err(CreateError::Store);
        }
        let replaced = [&records.key, &records.name]
            .into_iter()
            .flatten()
            .find(|b| b.workspace_id == Some(ws.id))
            .and_then(|b| b.replaced.clone());
        let binding = Binding {
            template_id: ws.template_id,
            workspace_name: ws.name.clone(),
            workspace_id: Some(ws.id),
            replaced,
        };
        // Nothing was created, but a conversation that adopts a workspace it cannot
        // record would not find it again: better to say so now.
        self.guard(store.put(lock.store(), task.user, &stale, &binding))
            .await?
            .map_err(CreateError::Store)
    }

    /// Puts the records back as they were before an intent whose create Coder refused,
    /// so the next call does not insist on the refused name.
    pub(super) async fn restore(&mut self, task: &Task, records: &Records, lock: &mut TaskLock) {
        let store = &self.engine.store;
        let mut writes = Vec::new();
        if let Some(key) = task.key_record() {
            writes.push((key, records.key.clone()));
        }
        if let Some(name) = &task.canonical {
            writes.push((name_key(name), records.name.clone()));
        }
        for (key, record) in writes {
            let restored = match &record {
                Some(binding) => {
                    store
                        .put(lock.store(), task.user, std::slice::from_ref(&key), binding)
                        .await
                }
                None => store.remove(task.user, &key).await,
            };
            if let Err(err) = restored {
                tracing::warn!(error = %err, "could not put back the records of a refused create");
            }
        }
    }
}

fn found(ws: Workspace, via: Via) -> Target {
    Target::Found {
        workspace: Box::new(ws),
        via,
    }
}
