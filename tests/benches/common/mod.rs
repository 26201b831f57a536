//! Code shared by the benches (each bench includes this module).

pub(crate) mod echo;
