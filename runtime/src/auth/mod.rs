//! Access control of the API: API keys with scopes, read from a keys file, checked on every
//! route by the route's required scope.

pub mod scope;

pub use scope::{Caller, Scope};
