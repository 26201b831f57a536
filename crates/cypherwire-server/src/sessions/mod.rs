//! Sessions that outlive connections: resumption tokens, the response cache that keeps a
//! resent request from running twice, and the push replay buffer (`docs/protocol.md` §3.7).

mod policy;
mod state;
mod table;
#[cfg(test)]
mod tests;

pub use self::policy::ResumePolicy;
pub(crate) use self::state::{
    Attachment, Begin, PushFailure, Refused, SessionId, SessionState, Snapshot,
};
pub(crate) use self::table::{Origin, Sessions, welcome};
