//! Application state shared with every handler ([`ServerBuilder::state`](crate::ServerBuilder::state),
//! [`Ctx::state`](crate::Ctx::state)): one value per type, set before the server starts.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// The application's values, one per type.
#[derive(Default, Clone)]
pub(crate) struct AppState {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("values", &self.values.len())
            .finish()
    }
}

impl AppState {
    /// Sets the value of type `S`, replacing one set before.
    pub(crate) fn insert<S: Send + Sync + 'static>(&mut self, value: S) {
        self.values.insert(TypeId::of::<S>(), Arc::new(value));
    }

    /// The value of type `S`, if one was set.
    pub(crate) fn get<S: Send + Sync + 'static>(&self) -> Option<Arc<S>> {
        let value = self.values.get(&TypeId::of::<S>())?.clone();
        value.downcast::<S>().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Counter(u32);

    #[test]
    fn one_value_per_type_and_none_for_an_unset_type() {
        let mut state = AppState::default();
        state.insert(Counter(1));
        state.insert(String::from("name"));
        state.insert(Counter(2));
        assert_eq!(state.get::<Counter>().as_deref(), Some(&Counter(2)));
        assert_eq!(
            state.get::<String>().as_deref().map(String::as_str),
            Some("name")
        );
        assert!(state.get::<u64>().is_none());
    }
}
