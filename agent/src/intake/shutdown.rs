//! The shutdown signal of the receivers (mini-redis's `Shutdown`, over a `watch` channel).
//!
//! The handle keeps the sender; every task holds a [`Shutdown`]. Sending `true`, or dropping the
//! sender (the handle was dropped), tells every task to stop.

use tokio::sync::watch;

/// Listens for the shutdown signal.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new(notify: watch::Receiver<bool>) -> Self {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Waits for the signal. Cancel-safe, so it can sit in a `select!`.
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // An error means the sender is gone: that is a shutdown too.
        let _ = self.notify.wait_for(|stop| *stop).await;
        self.is_shutdown = true;
    }
}
