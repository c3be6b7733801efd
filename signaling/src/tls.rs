//! TLS termination with certificate reload (issue 11, item 12). Work in progress.
