//! What the fakes share: a log of calls that tests wait on, and named gates that hold a
//! build or a rollout until the test releases it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a test waits for something that happens in milliseconds before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `probe` until it returns `Some`, at most [`PATIENCE`]; panics with `what` otherwise.
pub async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(started.elapsed() < PATIENCE, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Calls recorded in order, as short lines (`build m v1`, `deploy m v2`, ...).
#[derive(Debug, Default, Clone)]
pub struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    pub fn push(&self, call: impl Into<String>) {
        self.0.lock().unwrap().push(call.into());
    }

    /// Every call so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The calls so far that start with `prefix`.
    pub fn starting_with(&self, prefix: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|c| c.starts_with(prefix))
            .collect()
    }

    /// Waits until `call` has been made.
    pub async fn wait_for(&self, call: &str) {
        eventually(
            &format!("the call `{call}` (calls: {:?})", self.all()),
            || self.all().iter().any(|c| c == call).then_some(()),
        )
        .await
    }
}

/// Named gates, shut until released. Releasing before anyone waits is remembered.
#[derive(Debug, Default, Clone)]
pub struct Gates(Arc<Mutex<HashMap<String, Arc<Semaphore>>>>);

impl Gates {
    fn gate(&self, name: &str) -> Arc<Semaphore> {
        self.0
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }

    /// Waits until `name` is released (once per release).
    pub async fn pass(&self, name: &str) {
        self.gate(name)
            .acquire_owned()
            .await
            .expect("gates are never closed")
            .forget();
    }

    /// Lets one waiter of `name` through, now or when it comes.
    pub fn release(&self, name: &str) {
        self.gate(name).add_permits(1);
    }
}
