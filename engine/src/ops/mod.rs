//! What operators see and steer: metrics, registry reloads, the stall detector.

pub mod metrics;
pub mod reload;
pub(crate) mod stall;
