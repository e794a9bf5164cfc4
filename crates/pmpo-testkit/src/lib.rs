//! Helpers shared by pmpo's tests and benches (a dev-dependency, never
//! published): [`Ws`], a temporary workspace in which the real `pmpo` binary
//! runs, and [`model_server`], a scripted model endpoint on 127.0.0.1.

pub mod model_server;
mod ws;

pub use ws::*;
