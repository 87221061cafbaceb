//! The NBD server: serves a block-device stack to NBD clients.
//!
//! Layout, by job:
//! * [`proto`]: wire constants and pure parsers (fuzzable);
//! * [`request`]: validation of each request, once, at the edge;
//! * [`handshake`]: the fixed newstyle handshake over any `Read + Write`;
//! * [`transmission`]: the request loop, dispatch and replies;
//! * [`wire`]: non-blocking reply sending and per-connection budgets;
//! * [`pool`]: the worker pool shared by all connections;
//! * [`export`]: what is served and what is advertised about it;
//! * [`server`]: listeners, connection limits and shutdown;
//! * [`kernel`]: attaching an export to the kernel's NBD client.
//!
//! Design notes are in docs/nbd-server.md.

pub mod export;
pub mod handshake;
pub mod kernel;
pub mod pool;
pub mod proto;
pub mod request;
pub mod server;
pub mod transmission;
pub mod wire;

pub use export::{BlockSizes, Export};
pub use handshake::Negotiated;
pub use server::{Config, Listener, Server};
pub use transmission::{End, Limits};
