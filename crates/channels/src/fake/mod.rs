//! Fake chat services for tests: real HTTP on a loopback port, speaking
//! each service's wire format (JSON shapes and status codes from its
//! documentation), error answers included, scripted by the test.

pub mod discord;
pub mod matrix;
pub mod slack;
pub mod telegram;
