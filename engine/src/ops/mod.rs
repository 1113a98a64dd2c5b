//! What operators see and steer: metrics, registry reloads, the stall detector, systemd
//! notifications.

pub mod metrics;
pub mod notify;
pub mod reload;
pub(crate) mod stall;
