//! One pool of connections per command. A command opens a connection when a
//! step first needs one and hands it back when the step is done, so the
//! steps after it (the next dataset's load, the models) reuse it instead of
//! opening their own. The pool never holds more than its size open at once;
//! a connection that died is dropped, not handed out again.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::DbError;

/// A command's connections: at most `size` open at once.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    /// The command's name, for the log.
    app: String,
    size: usize,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    /// How many connections this pool has opened in all.
    opened: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        tracing::debug!(
            event = "connections",
            application = %self.app,
            opened = self.opened.load(Ordering::Relaxed),
            size = self.size,
            "the command's connections are closed"
        );
    }
}

/// A connection lent by a [`Pool`] (or one of its own, [`Pooled::own`]);
/// handed back when dropped, unless it died.
pub struct Pooled {
    client: Option<Client>,
    home: Option<(Arc<Inner>, OwnedSemaphorePermit)>,
}

impl Pool {
    /// A pool of at most `size` connections (at least one) named `app`.
    pub fn new(app: &str, size: usize) -> Pool {
        let size = size.max(1);
        Pool(Arc::new(Inner {
            app: app.to_owned(),
            size,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            opened: AtomicUsize::new(0),
        }))
    }

    /// A connection for the step `app` names (its `application_name`
    /// while lent: operators find each step's session in pg_stat_activity),
    /// waiting while all `size` are lent.
    pub async fn get(&self, app: &str) -> Result<Pooled, DbError> {
        let permit = (self.0.permits.clone().acquire_owned().await)
            .expect("the pool's semaphore is never closed");
        self.lend(permit, app).await
    }

    /// A connection if one can be had without waiting for another to come
    /// back; None when all are lent (an optional helper, as a COPY stream).
    pub async fn try_get(&self, app: &str) -> Option<Result<Pooled, DbError>> {
        let permit = self.0.permits.clone().try_acquire_owned().ok()?;
        Some(self.lend(permit, app).await)
    }

    /// How many connections the pool has opened so far.
    pub fn opened(&self) -> usize {
        self.0.opened.load(Ordering::Relaxed)
    }

    /// The most it will hold open at once.
    pub fn size(&self) -> usize {
        self.0.size
    }

    async fn lend(&self, permit: OwnedSemaphorePermit, app: &str) -> Result<Pooled, DbError> {
        let home = Some((self.0.clone(), permit));
        let name = super::libpq::application_name(app, &super::libpq::Process);
        // A session lock a step left behind (an error path that did not
        // reach its unlock) must not follow the connection to the next step.
        let reset = format!(
            "SELECT pg_advisory_unlock_all(); SET application_name = {}",
            super::quote_literal(&name)
        );
        loop {
            let idle = self.0.idle.lock().expect("pool lock").pop();
            let Some(client) = idle else { break };
            if !client.is_closed() && client.batch_execute(&reset).await.is_ok() {
                let client = Some(client);
                return Ok(Pooled { client, home });
            }
        }
        let client = super::connect_as(app).await?;
        self.0.opened.fetch_add(1, Ordering::Relaxed);
        let client = Some(client);
        Ok(Pooled { client, home })
    }
}

impl Pooled {
    /// A connection that belongs to no pool: closed when dropped (a process
    /// a plan was sent to, which has no command around it).
    pub fn own(client: Client) -> Pooled {
        Pooled {
            client: Some(client),
            home: None,
        }
    }
}

impl Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("a lent connection")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("a lent connection")
    }
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled").finish_non_exhaustive()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (Some(client), Some((inner, _permit))) = (self.client.take(), self.home.take()) else {
            return;
        };
        if !client.is_closed() {
            inner.idle.lock().expect("pool lock").push(client);
        }
    }
}
