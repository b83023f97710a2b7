//! The warp HTTP servers of the control plane. They call the library's services and never a
//! backend directly. The predict server of one model version is so1s-inference's
//! (`so1s_inference::server`), on this module's connection loop and error shape.
//!
//! - [`api`]: the management API and the inference gateway (`so1s serve`).
//! - [`serve`]: the connection loop with bounds on request heads (time and size).
//! - [`error`]: the one JSON error shape, `{"error": "...", "error_type": "..."}`, and the
//!   mapping of every failure to its status code.

pub mod api;
pub mod error;
pub mod serve;

pub use error::ApiError;
