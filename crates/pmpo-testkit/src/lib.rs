//! Helpers shared by pmpo's tests and benches (a dev-dependency, never
//! published): [`Ws`], a temporary workspace in which the real `pmpo` binary
//! runs, [`model_server`], a scripted model endpoint on 127.0.0.1, and
//! [`refine`], the helpers of the `pmpo refine` tests, and [`pg`], a fresh
//! database on the tests' PostgreSQL server.

pub mod model_server;
pub mod pg;
pub mod refine;
mod ws;

pub use ws::*;
