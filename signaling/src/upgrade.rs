//! WebSocket upgrade with a per-frame budget (issue 11, item 13). Work in progress.
