//! Admission latency benchmark (filled in below as the webhook lands).

fn main() {}
