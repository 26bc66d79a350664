use std::sync::Arc;

use tower_layer::Layer;

use super::policy::DrainPolicy;
use super::service::Drain;
use crate::connection::{ConnectionHandle, HasHandle, Phase};
use crate::error::ErrorKind;

/// Wraps a connection's service in [`Drain`], and starts a timer task (on
/// the current tokio runtime) for the policy's time limits, if it has any.
#[derive(Debug, Clone, Default)]
pub struct DrainLayer {
    policy: Arc<DrainPolicy>,
}

impl DrainLayer {
    /// A layer that drains connections as `policy` says.
    pub fn new(policy: DrainPolicy) -> Self {
        DrainLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<S: HasHandle> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Drain<S> {
        let handle = inner.handle().clone();
        let age_limit = self.policy.age_limit(&handle);
        let mut timed = false;
        if self.policy.next_check(&handle, age_limit).is_some() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(drain_on_time(handle, self.policy.clone(), age_limit));
                timed = true;
            }
        }
        Drain::new(inner, self.policy.clone(), age_limit, timed)
    }
}

/// Drains the connection when a time limit passes, even with no traffic.
async fn drain_on_time(
    handle: ConnectionHandle,
    policy: Arc<DrainPolicy>,
    age_limit: Option<std::time::Duration>,
) {
    loop {
        let phase_changed = handle.phase_changed_notify().notified();
        tokio::pin!(phase_changed);
        phase_changed.as_mut().enable();
        if handle.phase() != Phase::Open {
            return;
        }
        if let Some(reason) = policy.reason(&handle, age_limit) {
            if handle.start_draining(ErrorKind::ConnectionClosed, reason.clone()) {
                tracing::debug!(connection = handle.id(), %reason, "draining connection");
            }
            return;
        }
        let Some(wait) = policy.next_check(&handle, age_limit) else {
            return;
        };
        tokio::select! {
            _ = phase_changed => {}
            // A stream may have started meanwhile; the check above sorts it out.
            _ = tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))) => {}
        }
    }
}
