//! `mock-broker`: a local broker that behaves like AWS IoT Core.
//!
//! # Layout
//!
//! - [`policy`]: AWS IoT policy documents and the allow/deny decision.
pub mod policy;
