//! whisper-bench: the load generator and benchmark suite (placeholder).
fn main() {}
