//! The services of the msocket server daemon, `msocketd`, as a library: the binary is a
//! thin command line over them, and the CLI's demo, the benchmarks' network lab and the
//! tests run the same name server and relay in process.

mod accept;
pub mod metrics;
pub mod name_server;
pub mod relay_server;
