//! `mamori-collector`: offline analysis for now (`templates`).
fn main() {}
