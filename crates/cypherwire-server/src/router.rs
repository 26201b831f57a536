//! Routes requests by (path, operation) and actions by name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cypherwire_session::fasthash::FastState;

use crate::handler::{ActionHandler, RequestHandler};

/// Handlers by (path, operation), a fallback, and actions by name.
#[derive(Default, Clone)]
pub(crate) struct Router {
    /// path → operation → handler: two borrowed lookups, no allocation per request (with
    /// the fast hash: the table is fixed once the server is built).
    routes: HashMap<String, HashMap<String, Arc<dyn RequestHandler>, FastState>, FastState>,
    fallback: Option<Arc<dyn RequestHandler>>,
    actions: HashMap<String, Arc<dyn ActionHandler>, FastState>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut routes: Vec<_> = self
            .routes
            .iter()
            .flat_map(|(p, ops)| ops.keys().map(move |o| (p, o)))
            .collect();
        routes.sort();
        let mut actions: Vec<_> = self.actions.keys().collect();
        actions.sort();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("fallback", &self.fallback.is_some())
            .field("actions", &actions)
            .finish()
    }
}

impl Router {
    pub(crate) fn route(&mut self, path: String, operation: String, h: Arc<dyn RequestHandler>) {
        self.routes.entry(path).or_default().insert(operation, h);
    }

    pub(crate) fn fallback(&mut self, h: Arc<dyn RequestHandler>) {
        self.fallback = Some(h);
    }

    pub(crate) fn action(&mut self, name: String, h: Arc<dyn ActionHandler>) {
        self.actions.insert(name, h);
    }

    /// The handler for (path, operation), else the fallback.
    pub(crate) fn lookup(&self, path: &str, operation: &str) -> Option<Arc<dyn RequestHandler>> {
        self.routes
            .get(path)
            .and_then(|ops| ops.get(operation))
            .or(self.fallback.as_ref())
            .cloned()
    }

    pub(crate) fn action_handler(&self, name: &str) -> Option<Arc<dyn ActionHandler>> {
        self.actions.get(name).cloned()
    }
}
