//! Challenge sessions: the state machine and the bounded registry (filled in next).
