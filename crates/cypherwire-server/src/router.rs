//! Routes requests by (path, operation) and actions by name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cypherwire_session::fasthash::FastState;

use crate::handler::{ActionHandler, RequestHandler};
use crate::metrics::{RouteMetrics, Routes};

/// A route's handler and its counters.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) handler: Arc<dyn RequestHandler>,
    pub(crate) metrics: Arc<RouteMetrics>,
}

impl Route {
    fn new(handler: Arc<dyn RequestHandler>) -> Self {
        Self {
            handler,
            metrics: Arc::default(),
        }
    }
}

/// Handlers by (path, operation), a fallback, and actions by name.
#[derive(Default, Clone)]
pub(crate) struct Router {
    /// path → operation → route: two borrowed lookups, no allocation per request (with
    /// the fast hash: the table is fixed once the server is built).
    routes: HashMap<String, HashMap<String, Route, FastState>, FastState>,
    fallback: Option<Route>,
    /// The requests no route took (answered `NOT_FOUND`).
    pub(crate) unmatched: Arc<RouteMetrics>,
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
        self.routes
            .entry(path)
            .or_default()
            .insert(operation, Route::new(h));
    }

    pub(crate) fn fallback(&mut self, h: Arc<dyn RequestHandler>) {
        self.fallback = Some(Route::new(h));
    }

    /// Every route's counters (the fallback's as path and operation `*`, the unmatched
    /// requests' as empty ones), for the server's statistics.
    pub(crate) fn metrics(&self) -> Routes {
        let mut routes: Vec<_> = self
            .routes
            .iter()
            .flat_map(|(p, ops)| {
                ops.iter()
                    .map(move |(o, r)| (p.clone(), o.clone(), r.metrics.clone()))
            })
            .collect();
        if let Some(f) = &self.fallback {
            routes.push(("*".into(), "*".into(), f.metrics.clone()));
        }
        routes.push((String::new(), String::new(), self.unmatched.clone()));
        Routes { routes }
    }

    pub(crate) fn action(&mut self, name: String, h: Arc<dyn ActionHandler>) {
        self.actions.insert(name, h);
    }

    /// The route of (path, operation), else the fallback.
    pub(crate) fn lookup(&self, path: &str, operation: &str) -> Option<&Route> {
        self.routes
            .get(path)
            .and_then(|ops| ops.get(operation))
            .or(self.fallback.as_ref())
    }

    pub(crate) fn action_handler(&self, name: &str) -> Option<Arc<dyn ActionHandler>> {
        self.actions.get(name).cloned()
    }
}
