//! Client-side action handlers ([`ClientBuilder::on_action`](crate::ClientBuilder::on_action),
//! pnetwork's `bindAction`): actions with a bound name run their handler, in order of arrival,
//! one at a time, on a task of the client's own; the others go to the incoming stream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cypherwire_wire::Action;
use tokio::sync::mpsc;

/// How many actions wait for their handlers before the client stops reading (backpressure).
const QUEUE: usize = 256;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A handler of one action name.
pub(crate) type Handler = Arc<dyn Fn(Action) -> BoxFuture + Send + Sync>;

/// The handlers by name, as the builder collects them.
#[derive(Default, Clone)]
pub(crate) struct Handlers(HashMap<String, Handler>);

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Handlers {
    pub(crate) fn insert<F, Fut>(&mut self, name: String, handler: F)
    where
        F: Fn(Action) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |a| Box::pin(handler(a)));
        self.0.insert(name, handler);
    }

    /// Starts the task that runs the handlers; `None` when there are none.
    pub(crate) fn start(self) -> Option<Runner> {
        if self.0.is_empty() {
            return None;
        }
        let handlers = Arc::new(self.0);
        let (tx, mut rx) = mpsc::channel::<(Handler, Action)>(QUEUE);
        tokio::spawn(async move {
            while let Some((handler, action)) = rx.recv().await {
                handler(action).await;
            }
        });
        Some(Runner { handlers, tx })
    }
}

/// The driver's end: hands bound actions to the task running their handlers.
pub(crate) struct Runner {
    handlers: Arc<HashMap<String, Handler>>,
    tx: mpsc::Sender<(Handler, Action)>,
}

impl Runner {
    /// Queues `action` for its handler (waiting while the queue is full), or gives it back
    /// when no handler is bound to its name.
    pub(crate) async fn take(&self, action: Action) -> Option<Action> {
        let Some(handler) = self.handlers.get(&action.name).cloned() else {
            return Some(action);
        };
        // If the task is gone (the runtime is shutting down), the action goes with it.
        let _ = self.tx.send((handler, action)).await;
        None
    }
}
