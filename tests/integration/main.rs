//! Integration tests: one binary driving the real `vault` executable on temp dirs, one module
//! per area.

mod common;
mod config;
mod craft;
mod s3server;

mod agent;
mod audit;
mod bad_input;
mod changing;
mod compression;
mod corruption;
mod crash;
mod dedup;
mod drill;
mod encryption;
mod faults;
mod faults_remote;
mod forget;
mod gates;
mod hostile;
mod hostile_config;
mod hostile_http;
mod lists;
mod locking;
mod model;
mod postgres;
mod prune;
mod reindex;
mod remote_local;
mod remote_ntfs;
mod remote_s3;
mod roundtrip;
mod sanity;
mod split_restore;
mod streams;
mod templates;
mod traversal;
