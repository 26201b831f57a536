//! Typed access to the payloads of messages: `req.data::<T>()` and the like, for any
//! `serde` type.

use serde::de::DeserializeOwned;

use crate::message::{Action, Push, Request};
use crate::value::from_value;

impl Request {
    /// The data converted to `T`. It converts a copy: [`from_value`]`(req.data)` takes the
    /// data without one.
    ///
    /// # Errors
    /// If the data does not have `T`'s shape; in a server handler, `?` turns the error into a
    /// `BAD_REQUEST` answer.
    pub fn data<T: DeserializeOwned>(&self) -> crate::Result<T> {
        from_value(self.data.clone())
    }
}

impl Action {
    /// The data converted to `T` (a copy, like [`Request::data`]).
    ///
    /// # Errors
    /// If the data does not have `T`'s shape.
    pub fn data<T: DeserializeOwned>(&self) -> crate::Result<T> {
        from_value(self.data.clone())
    }
}

impl Push {
    /// The data converted to `T` (a copy, like [`Request::data`]).
    ///
    /// # Errors
    /// If the data does not have `T`'s shape.
    pub fn data<T: DeserializeOwned>(&self) -> crate::Result<T> {
        from_value(self.data.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use crate::value::Value;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn each_message_converts_its_data_and_keeps_it() {
        let point = Value::map([("x", Value::from(1)), ("y", Value::from(-2))]);
        let req = Request::new(1, "/P", "GET").with_data(point.clone());
        assert_eq!(req.data::<Point>().unwrap(), Point { x: 1, y: -2 });
        assert_eq!(req.data, point, "the request keeps its data");
        let action = Action::new("move", point.clone(), 0);
        assert_eq!(action.data::<Point>().unwrap(), Point { x: 1, y: -2 });
        let push = Push::new(1, point);
        assert_eq!(push.data::<Point>().unwrap(), Point { x: 1, y: -2 });
    }

    #[test]
    fn data_of_the_wrong_shape_is_an_error() {
        let req = Request::new(1, "/P", "GET").with_data("not a point");
        assert!(req.data::<Point>().is_err());
        assert!(Push::new(1, 5).data::<String>().is_err());
    }
}
