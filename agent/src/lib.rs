//! Cairn's engine: the backup and restore pipelines and what they share (metadata capture,
//! patterns, snapshot selection, repository locations). The `cairn` command, the Kubernetes
//! agent, the init-container restore and the server all call these functions; no capability
//! lives only behind a command line.

pub mod backup;
pub mod filter;
pub mod fsmeta;
pub mod location;
pub mod restore;
pub mod select;
